package audit

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
)

// obj is one JSON object of a document; encoding/json writes its keys
// sorted, so documents built of them are deterministic.
type obj = map[string]any

// --- SPDX 3.0.1 -----------------------------------------------------------

// SPDX IRIs of the things a lineage names.
func spdxModelID(d string) string   { return "urn:fedtune:model:" + d }
func spdxDatasetID(d string) string { return "urn:fedtune:dataset:" + d }
func spdxAgentID(id string) string  { return "urn:fedtune:agent:" + url.PathEscape(id) }
func spdxRoundID(job string, n uint64) string {
	return "urn:fedtune:round:" + url.PathEscape(job) + ":" + strconv.FormatUint(n, 10)
}

// spdxNoAssertionLicence is SPDX 3's NoAssertionLicense individual.
const spdxNoAssertionLicence = "https://spdx.org/rdf/3.0.1/terms/Licensing/NoAssertion"

const spdxCreationInfo = "_:creationinfo"

// spdxBuilder collects a document's elements in the order they are added.
type spdxBuilder struct {
	graph    []obj
	ids      []string // every element's spdxId, for SpdxDocument.element
	seen     map[string]bool
	relCount int
	docID    string
}

func (b *spdxBuilder) add(id string, o obj) {
	if b.seen[id] {
		return
	}
	b.seen[id] = true
	o["spdxId"] = id
	if _, ok := o["creationInfo"]; !ok {
		o["creationInfo"] = spdxCreationInfo
	}
	b.graph = append(b.graph, o)
	b.ids = append(b.ids, id)
}

func (b *spdxBuilder) agent(id, role string) string {
	sid := spdxAgentID(id)
	b.add(sid, obj{"type": "Agent", "name": id, "description": "fedtune " + role + " (ledger member ID: SHA-256 of its ed25519 public key)"})
	return sid
}

// licence returns the IRI of the licence element for l (added once).
func (b *spdxBuilder) licence(l string) string {
	if l == "" {
		return spdxNoAssertionLicence
	}
	expr := licenceExpr(l)
	id := "urn:fedtune:licence:" + url.PathEscape(expr)
	b.add(id, obj{"type": "simplelicensing_LicenseExpression", "simplelicensing_licenseExpression": expr})
	return id
}

func (b *spdxBuilder) rel(from, typ string, to ...string) {
	if len(to) == 0 {
		return
	}
	b.relCount++
	b.add(fmt.Sprintf("%s:relationship:%d", b.docID, b.relCount), obj{"type": "Relationship", "from": from, "relationshipType": typ, "to": to})
}

func spdxHash(d string) []obj { return []obj{{"type": "Hash", "algorithm": "sha256", "hashValue": d}} }

func spdxEntries(kv [][2]string) []obj {
	out := make([]obj, 0, len(kv))
	for _, e := range kv {
		out = append(out, obj{"type": "DictionaryEntry", "key": e[0], "value": e[1]})
	}
	return out
}

func downloadLocation(source, d string) string {
	if u, err := url.Parse(source); err == nil && u.Scheme != "" && u.Opaque+u.Host+u.Path != "" {
		return source
	}
	return "urn:fedtune:artifact:" + d
}

// modelPackage adds an ai_AIPackage for m.
func (b *spdxBuilder) modelPackage(m ledger.Model, info, released string) string {
	id := spdxModelID(m.Digest)
	o := obj{
		"type":                      "ai_AIPackage",
		"name":                      modelName(m),
		"verifiedUsing":             spdxHash(m.Digest),
		"software_primaryPurpose":   "model",
		"software_downloadLocation": downloadLocation(m.Source, m.Digest),
		"software_packageVersion":   short(m.Digest),
	}
	if info != "" {
		o["ai_informationAboutTraining"] = info
	}
	if released != "" {
		o["releaseTime"] = released
	}
	if m.Registrar != "" {
		o["suppliedBy"] = b.agent(m.Registrar, "registrar")
	}
	b.add(id, o)
	b.rel(id, "hasDeclaredLicense", b.licence(m.Licence))
	b.rel(id, "hasConcludedLicense", spdxNoAssertionLicence)
	return id
}

// SPDXDocument returns an SPDX 3.0.1 JSON-LD document of p's model with
// the AI, Dataset, Build and SimpleLicensing profiles: the model and every
// model on its way from the base as ai_AIPackage (sha256 = weight digest),
// each dataset as dataset_DatasetPackage (sha256 = manifest digest), each
// round as a build_Build (hasInput its base model and datasets, hasOutput
// its model, invokedBy its aggregator, delegatedTo its contributors, the
// strategy, parameters and contribution weights as build_parameter),
// trainedOn from the model to every dataset, descendantOf from each model to
// the one its round started from, licences as hasDeclaredLicense, and
// auditors' dataset attestations as review Annotations.
func SPDXDocument(p *Provenance) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	l := p.Lineage
	docID := "urn:fedtune:spdx:" + url.PathEscape(p.ChainID) + ":" + l.Model.Digest
	b := &spdxBuilder{seen: map[string]bool{}, docID: docID}
	tool := "urn:fedtune:agent:fedtune-audit"
	b.add(tool, obj{"type": "SoftwareAgent", "name": "fedtune audit provenance"})

	rounds := oldestFirst(l)
	info := ""
	if len(rounds) > 0 {
		info = fmt.Sprintf("Federated fine-tuning from base model %s in %d round(s) recorded on fedtune ledger chain %q (job %s); see the build_Build elements.",
			l.Base.Digest, len(rounds), p.ChainID, rounds[len(rounds)-1].JobID)
	}
	model := b.modelPackage(l.Model, info, stamp(p.Time))
	if l.Base.Digest != l.Model.Digest {
		b.modelPackage(l.Base, "", p.timeAt(l.Base.Height))
	}

	datasets := sortedDatasets(l)
	var dsIDs []string
	for _, d := range datasets {
		id := spdxDatasetID(d.Digest)
		o := obj{
			"type":                      "dataset_DatasetPackage",
			"name":                      d.Name,
			"verifiedUsing":             spdxHash(d.Digest),
			"software_primaryPurpose":   "data",
			"software_downloadLocation": downloadLocation(d.Source, d.Digest),
			"software_packageVersion":   short(d.Digest),
			"dataset_datasetType":       []string{"text"},
			"dataset_datasetSize":       d.Bytes,
			"description":               spdxDatasetDescription(d),
		}
		if obl := licenceObligations(d.Licence); len(obl) > 0 {
			o["comment"] = "licence obligations: " + strings.Join(obl, "; ")
		}
		if d.Owner != "" {
			o["originatedBy"] = []string{b.agent(d.Owner, "trainer")}
		}
		b.add(id, o)
		b.rel(id, "hasDeclaredLicense", b.licence(d.Licence))
		b.rel(id, "hasConcludedLicense", spdxNoAssertionLicence)
		dsIDs = append(dsIDs, id)
	}

	for _, r := range rounds {
		rid := spdxRoundID(r.JobID, r.Round)
		in := spdxModelID(r.BaseModel) // the base, or the previous round's output
		out := model
		if r.ModelDigest != l.Model.Digest {
			out = b.modelPackage(ledger.Model{Digest: r.ModelDigest, Registrar: r.Aggregator}, "", p.timeAt(r.CommittedHeight))
		}
		params := [][2]string{{"strategy", r.Strategy}}
		for _, k := range slices.Sorted(maps.Keys(r.Params)) {
			params = append(params, [2]string{"param." + k, r.Params[k]})
		}
		var contributors, inputs []string
		inputs = append(inputs, in)
		seenDS := map[string]bool{}
		for _, c := range r.Contributors {
			params = append(params,
				[2]string{"contributor." + c.Trainer + ".weight", strconv.FormatFloat(c.Weight, 'g', -1, 64)},
				[2]string{"contributor." + c.Trainer + ".samples", strconv.FormatUint(c.Samples, 10)},
				[2]string{"contributor." + c.Trainer + ".update", c.UpdateDigest},
				[2]string{"contributor." + c.Trainer + ".dataset", c.DatasetDigest})
			for _, pd := range c.Published {
				params = append(params, [2]string{"contributor." + c.Trainer + ".published", pd})
			}
			contributors = append(contributors, b.agent(c.Trainer, "trainer"))
			for _, dd := range c.Datasets() {
				if !seenDS[dd] && b.seen[spdxDatasetID(dd)] {
					seenDS[dd] = true
					inputs = append(inputs, spdxDatasetID(dd))
				}
			}
		}
		for _, x := range r.Rejected {
			params = append(params, [2]string{"rejected." + x.Trainer + "." + x.UpdateDigest, x.Reason})
		}
		o := obj{
			"type":            "build_Build",
			"name":            fmt.Sprintf("job %s round %d", r.JobID, r.Round),
			"build_buildType": ProvenanceBuildType,
			"build_buildId":   fmt.Sprintf("%s/%d", r.JobID, r.Round),
			"build_parameter": spdxEntries(params),
			"description":     fmt.Sprintf("opened at height %d, committed at height %d", r.OpenedHeight, r.CommittedHeight),
		}
		if digest.Valid(r.ConfigDigest) {
			o["build_configSourceDigest"] = spdxHash(r.ConfigDigest)
		}
		if t := p.timeAt(r.OpenedHeight); t != "" {
			o["build_buildStartTime"] = t
		}
		if t := p.timeAt(r.CommittedHeight); t != "" {
			o["build_buildEndTime"] = t
		}
		b.add(rid, o)
		b.rel(rid, "hasInput", inputs...)
		b.rel(rid, "hasOutput", out)
		if r.Aggregator != "" {
			b.rel(rid, "invokedBy", b.agent(r.Aggregator, "aggregator"))
		}
		b.rel(rid, "delegatedTo", contributors...)
		b.rel(out, "descendantOf", in)
	}
	b.rel(model, "trainedOn", dsIDs...)

	creation := []obj{{"type": "CreationInfo", "@id": spdxCreationInfo, "specVersion": "3.0.1", "created": stamp(p.Time), "createdBy": []string{tool}}}
	for i, a := range sortedAttestations(p.attestations()) {
		ci := fmt.Sprintf("_:attestation%d", i)
		auditor := b.agent(a.Auditor, "auditor")
		at := a.Time
		if at.IsZero() {
			at = p.Time
		}
		creation = append(creation, obj{"type": "CreationInfo", "@id": ci, "specVersion": "3.0.1", "created": stamp(at), "createdBy": []string{auditor}})
		st := fmt.Sprintf("%s: %s", a.Kind, a.Result)
		if a.Detail != "" {
			st += " (" + a.Detail + ")"
		}
		st += fmt.Sprintf("; DatasetAttested at height %d", a.Height)
		if a.TxHash != "" {
			st += " tx " + a.TxHash
		}
		b.add(fmt.Sprintf("%s:attestation:%d", docID, i), obj{"type": "Annotation", "creationInfo": ci, "annotationType": "review",
			"subject": spdxDatasetID(a.Dataset), "statement": st})
	}

	dataLicence := b.licence("CC0-1.0") // before the element list is taken
	doc := obj{
		"type":               "SpdxDocument",
		"spdxId":             docID,
		"creationInfo":       spdxCreationInfo,
		"name":               "fedtune provenance of model " + l.Model.Digest,
		"dataLicense":        dataLicence,
		"profileConformance": []string{"ai", "build", "core", "dataset", "simpleLicensing", "software"},
		"rootElement":        []string{model},
		"element":            append([]string(nil), b.ids...),
	}
	graph := make([]any, 0, len(creation)+1+len(b.graph))
	for _, c := range creation {
		graph = append(graph, c)
	}
	graph = append(graph, doc)
	for _, o := range b.graph {
		graph = append(graph, o)
	}
	return marshalDoc(obj{"@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld", "@graph": graph})
}

// spdxDatasetDescription says what a dataset package is: its samples and
// root, where the ledger recorded it and, for a published dataset, its
// signed manifest's digest, its shards and its card.
func spdxDatasetDescription(d ledger.Dataset) string {
	s := fmt.Sprintf("%d samples; RFC 6962 Merkle root %s over the sorted sample hashes; registered at height %d (tx %s).",
		d.Samples, d.Root, d.Height, d.TxHash)
	if !d.Published {
		return s + " The data stays with its trainer."
	}
	s = fmt.Sprintf("%d samples (%s); RFC 6962 Merkle root %s over the samples' leaf hashes; published at height %d (tx %s) by a signed manifest whose SHA-256 is %s.",
		d.Samples, d.Format, d.Root, d.Height, d.TxHash, d.Digest)
	if d.Card != "" {
		s += " Dataset card SHA-256 " + d.Card + "."
	}
	for i, sh := range d.Shards {
		s += fmt.Sprintf(" Shard %d: SHA-256 %s, samples [%d, %d).", i, sh.Digest, sh.First, sh.First+sh.Samples)
	}
	return s
}

// --- CycloneDX 1.6 -----------------------------------------------------------

func cdxModelRef(d string) string   { return "model:" + d }
func cdxDatasetRef(d string) string { return "dataset:" + d }

func cdxHashes(d string) []obj { return []obj{{"alg": "SHA-256", "content": d}} }

func cdxLicences(l string) []obj {
	if l == "" {
		return nil
	}
	expr := licenceExpr(l)
	if expr != l {
		return []obj{{"license": obj{"name": l}}}
	}
	return []obj{{"expression": expr}}
}

func cdxProps(kv [][2]string) []obj {
	out := make([]obj, 0, len(kv))
	for _, e := range kv {
		out = append(out, obj{"name": e[0], "value": e[1]})
	}
	return out
}

// cdxSerial derives the BOM's serial number from what it is about, as an
// RFC 4122 version-5-shaped UUID, so the same chain gives the same BOM.
func cdxSerial(chainID, model string) string {
	h := digest.Bytes([]byte("fedtune cyclonedx\x00" + chainID + "\x00" + model))
	b := []byte(h[:32])
	b[12] = '5'                                                    // version 5
	b[16] = "89ab"[strings.IndexByte("0123456789abcdef", b[16])%4] // RFC 4122 variant
	s := string(b)
	return "urn:uuid:" + s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}

func cdxModel(m ledger.Model) obj {
	o := obj{
		"type":    "machine-learning-model",
		"bom-ref": cdxModelRef(m.Digest),
		"name":    modelName(m),
		"version": short(m.Digest),
		"hashes":  cdxHashes(m.Digest),
	}
	if ls := cdxLicences(m.Licence); ls != nil {
		o["licenses"] = ls
	}
	if m.Registrar != "" {
		o["supplier"] = obj{"name": m.Registrar}
	}
	var props [][2]string
	if m.Source != "" {
		props = append(props, [2]string{"fedtune:source", m.Source})
	}
	if m.Height != 0 {
		props = append(props, [2]string{"fedtune:height", strconv.FormatUint(m.Height, 10)})
	}
	for _, s := range m.Sources {
		props = append(props, [2]string{"fedtune:source-file:" + s.Path, s.SHA256})
	}
	if len(props) > 0 {
		o["properties"] = cdxProps(props)
	}
	return o
}

// CycloneDXBOM returns a CycloneDX 1.6 ML-BOM of p's model: the model as
// the metadata component (type machine-learning-model, SHA-256 = weight
// digest, licence, a modelCard naming its training datasets, the base model
// and every intermediate model as pedigree ancestors, each round's
// strategy, parameters and contributors with their weights as properties),
// each dataset as a data component (SHA-256 = manifest digest, licence,
// owner, sample count, Merkle root, attestations), and the lineage as the
// dependency graph: each model depends on the model its round started from
// and on the datasets of its contributors.
func CycloneDXBOM(p *Provenance) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	l := p.Lineage
	rounds := oldestFirst(l)
	datasets := sortedDatasets(l)
	atts := sortedAttestations(p.attestations())

	model := cdxModel(l.Model)
	var dsRefs []obj
	for _, d := range datasets {
		dsRefs = append(dsRefs, obj{"ref": cdxDatasetRef(d.Digest)})
	}
	card := obj{"modelParameters": obj{
		"approach": obj{"type": "self-supervised"},
		"task":     "text-generation",
	}}
	if len(dsRefs) > 0 {
		card["modelParameters"].(obj)["datasets"] = dsRefs
	}
	model["modelCard"] = card

	var ancestors []obj
	deps := map[string][]string{}
	if l.Base.Digest != l.Model.Digest {
		ancestors = append(ancestors, cdxModel(l.Base))
	}
	var props [][2]string
	props = append(props, [2]string{"fedtune:chain-id", p.ChainID})
	for _, r := range rounds {
		if r.ModelDigest != l.Model.Digest {
			ancestors = append(ancestors, cdxModel(ledger.Model{Digest: r.ModelDigest, Registrar: r.Aggregator, Height: r.CommittedHeight}))
		}
		pre := fmt.Sprintf("fedtune:round:%s:%d:", r.JobID, r.Round)
		props = append(props,
			[2]string{pre + "base-model", r.BaseModel},
			[2]string{pre + "model", r.ModelDigest},
			[2]string{pre + "config-digest", r.ConfigDigest},
			[2]string{pre + "strategy", r.Strategy},
			[2]string{pre + "aggregator", r.Aggregator},
			[2]string{pre + "committed-height", strconv.FormatUint(r.CommittedHeight, 10)})
		if t := p.timeAt(r.CommittedHeight); t != "" {
			props = append(props, [2]string{pre + "committed-time", t})
		}
		for _, k := range slices.Sorted(maps.Keys(r.Params)) {
			props = append(props, [2]string{pre + "param:" + k, r.Params[k]})
		}
		ref := cdxModelRef(r.ModelDigest)
		deps[ref] = append(deps[ref], cdxModelRef(r.BaseModel))
		for _, c := range r.Contributors {
			props = append(props,
				[2]string{pre + "contributor:" + c.Trainer + ":weight", strconv.FormatFloat(c.Weight, 'g', -1, 64)},
				[2]string{pre + "contributor:" + c.Trainer + ":samples", strconv.FormatUint(c.Samples, 10)},
				[2]string{pre + "contributor:" + c.Trainer + ":update", c.UpdateDigest},
				[2]string{pre + "contributor:" + c.Trainer + ":dataset", c.DatasetDigest})
			for _, pd := range c.Published {
				props = append(props, [2]string{pre + "contributor:" + c.Trainer + ":published", pd})
			}
			for _, dd := range c.Datasets() {
				if !slices.Contains(deps[ref], cdxDatasetRef(dd)) {
					deps[ref] = append(deps[ref], cdxDatasetRef(dd))
				}
			}
		}
		for _, x := range r.Rejected {
			props = append(props, [2]string{pre + "rejected:" + x.Trainer + ":" + x.UpdateDigest, x.Reason})
		}
	}
	if len(ancestors) > 0 {
		model["pedigree"] = obj{"ancestors": ancestors, "notes": "federated fine-tuning rounds recorded on a fedtune ledger; ancestors oldest first"}
	}
	own, _ := model["properties"].([]obj)
	model["properties"] = append(cdxProps(props), own...)

	var components []obj
	for _, d := range datasets {
		data := obj{"type": "dataset", "name": d.Name,
			"description": fmt.Sprintf("%d samples; RFC 6962 Merkle root %s over the sorted sample hashes", d.Samples, d.Root)}
		if d.Owner != "" {
			data["governance"] = obj{"owners": []obj{{"contact": obj{"name": d.Owner}}}}
		}
		dp := [][2]string{
			{"fedtune:samples", strconv.FormatUint(d.Samples, 10)},
			{"fedtune:bytes", strconv.FormatUint(d.Bytes, 10)},
			{"fedtune:merkle-root", d.Root},
			{"fedtune:owner", d.Owner},
			{"fedtune:height", strconv.FormatUint(d.Height, 10)},
		}
		if d.Source != "" {
			dp = append(dp, [2]string{"fedtune:source", d.Source})
		}
		for _, o := range licenceObligations(d.Licence) {
			dp = append(dp, [2]string{"fedtune:licence-obligation", o})
		}
		if d.Published {
			dp = append(dp, [2]string{"fedtune:published", "true"}, [2]string{"fedtune:manifest-digest", d.Digest}, [2]string{"fedtune:format", d.Format})
			if d.Card != "" {
				dp = append(dp, [2]string{"fedtune:card-digest", d.Card})
			}
			for i, sh := range d.Shards {
				dp = append(dp, [2]string{fmt.Sprintf("fedtune:shard:%d", i), fmt.Sprintf("%s samples [%d, %d)", sh.Digest, sh.First, sh.First+sh.Samples)})
			}
		}
		for _, a := range atts {
			if a.Dataset == d.Digest {
				v := a.Result
				if a.Detail != "" {
					v += " (" + a.Detail + ")"
				}
				if a.TxHash != "" {
					v += "; DatasetAttested tx " + a.TxHash
				}
				dp = append(dp, [2]string{fmt.Sprintf("fedtune:attestation:%s:%s:%d", a.Auditor, a.Kind, a.Height), v})
			}
		}
		c := obj{"type": "data", "bom-ref": cdxDatasetRef(d.Digest), "name": d.Name, "version": short(d.Digest),
			"hashes": cdxHashes(d.Digest), "data": []obj{data}, "properties": cdxProps(dp)}
		if ls := cdxLicences(d.Licence); ls != nil {
			c["licenses"] = ls
		}
		components = append(components, c)
	}

	// Every component in the graph gets a dependency entry (empty when it
	// has none), in the order: model, ancestors, datasets.
	var dependencies []obj
	addDep := func(ref string) {
		on := deps[ref]
		if on == nil {
			on = []string{}
		}
		dependencies = append(dependencies, obj{"ref": ref, "dependsOn": on})
	}
	addDep(cdxModelRef(l.Model.Digest))
	for _, a := range ancestors {
		addDep(a["bom-ref"].(string))
	}
	for _, d := range datasets {
		addDep(cdxDatasetRef(d.Digest))
	}

	bom := obj{
		"bomFormat":    "CycloneDX",
		"specVersion":  "1.6",
		"serialNumber": cdxSerial(p.ChainID, l.Model.Digest),
		"version":      1,
		"metadata": obj{
			"timestamp": stamp(p.Time),
			"tools":     obj{"components": []obj{{"type": "application", "name": "fedtune", "description": "fedtune audit provenance"}}},
			"component": model,
		},
		"dependencies": dependencies,
	}
	if len(components) > 0 {
		bom["components"] = components
	}
	return marshalDoc(bom)
}
