package inference

import (
	"encoding/json"
	"net/http"
)

// APIError is an error as OpenAI's API answers it: an HTTP status and the
// body {"error": {"message", "type", "param", "code"}}.
type APIError struct {
	Status  int    // HTTP status
	Message string // for people
	Type    string // invalid_request_error, requests, server_error
	Param   string // the request field at fault ("" for none)
	Code    string // machine-readable reason ("" for none)
}

func (e *APIError) Error() string { return e.Message }

// MarshalJSON writes e as OpenAI's error body.
func (e *APIError) MarshalJSON() ([]byte, error) {
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	type body struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}
	return json.Marshal(struct {
		Error body `json:"error"`
	}{body{e.Message, e.Type, opt(e.Param), opt(e.Code)}})
}

func badRequest(param, code, msg string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Message: msg, Type: "invalid_request_error", Param: param, Code: code}
}

func serverError(msg string) *APIError {
	return &APIError{Status: http.StatusInternalServerError, Message: msg, Type: "server_error"}
}

func writeError(w http.ResponseWriter, e *APIError) {
	b, _ := e.MarshalJSON()
	w.Header().Set("Content-Type", "application/json")
	switch e.Status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="fedtune"`)
	case http.StatusTooManyRequests:
		// OpenAI's clients wait this long before they retry.
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(e.Status)
	w.Write(append(b, '\n'))
}
