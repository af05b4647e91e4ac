#!/bin/sh
# Regenerates model/chat/testdata/{configs/*.json,expected.json} with the
# pinned npm packages of package-lock.json (network needed once; the Go
# tests read only the committed files).
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
TZ=UTC LANG=C LC_ALL=C node render.mjs
