// Reference renderer for the differential tests of injector/template.py.
//
// Reads a stream of JSON cases {"name": ..., "text": ..., "data": ...} from
// stdin and writes one JSON line per case to stdout:
// {"ok": true, "out": <base64 bytes>} or {"ok": false, "phase": "parse"|"exec", "err": ...}.
// Numbers in "data" become int when they have no fraction/exponent, else
// float64, mirroring how the Python side sees YAML/JSON ints and floats.
// Standard library only, so `GO111MODULE=off go build` works offline.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"strings"
	"text/template"
)

type testCase struct {
	Name string          `json:"name"`
	Text string          `json:"text"`
	Data json.RawMessage `json:"data"`
}

type result struct {
	OK    bool   `json:"ok"`
	Out   string `json:"out,omitempty"`
	Phase string `json:"phase,omitempty"`
	Err   string `json:"err,omitempty"`
}

func convert(v interface{}) interface{} {
	switch x := v.(type) {
	case map[string]interface{}:
		for k, e := range x {
			x[k] = convert(e)
		}
		return x
	case []interface{}:
		for i, e := range x {
			x[i] = convert(e)
		}
		// cap == len, so "slice" cannot reach past the elements like Python can't
		return x[:len(x):len(x)]
	case json.Number:
		s := string(x)
		if !strings.ContainsAny(s, ".eE") {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return int(n)
			}
		}
		f, _ := strconv.ParseFloat(s, 64)
		return f
	}
	return v
}

func run(c testCase) (res result) {
	var data interface{}
	if len(c.Data) > 0 {
		dec := json.NewDecoder(bytes.NewReader(c.Data))
		dec.UseNumber()
		if err := dec.Decode(&data); err != nil {
			return result{Phase: "data", Err: err.Error()}
		}
		data = convert(data)
	}
	name := c.Name
	if name == "" {
		name = "template"
	}
	tmpl, err := template.New(name).Option("missingkey=error").Parse(c.Text)
	if err != nil {
		return result{Phase: "parse", Err: err.Error()}
	}
	var out bytes.Buffer
	defer func() {
		// A runtime panic inside text/template is a reference bug worth seeing,
		// not a reason to lose the rest of the batch.
		if r := recover(); r != nil {
			res = result{Phase: "panic", Err: strings.TrimSpace(strings.Split(fmtAny(r), "\n")[0])}
		}
	}()
	if err := tmpl.Execute(&out, data); err != nil {
		return result{Phase: "exec", Err: err.Error()}
	}
	return result{OK: true, Out: base64.StdEncoding.EncodeToString(out.Bytes())}
}

func fmtAny(v interface{}) string {
	if e, ok := v.(error); ok {
		return e.Error()
	}
	if s, ok := v.(string); ok {
		return s
	}
	return "panic"
}

func main() {
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	w := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(w)
	for {
		var c testCase
		if err := dec.Decode(&c); err != nil {
			if err != io.EOF {
				enc.Encode(result{Phase: "input", Err: err.Error()})
			}
			break
		}
		enc.Encode(run(c))
		// Flush per case so a long-lived caller can read answers one by one.
		w.Flush()
	}
	w.Flush()
}
