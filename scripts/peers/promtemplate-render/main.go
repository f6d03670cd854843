// promtemplate-render renders alert templates with Prometheus' own template package, as its rule
// manager does (rules/alerting.go: the $labels/$externalLabels/$externalURL/$value preamble, the
// template named __alert_<name>, "<error expanding template: ...>" on failure). It is a test peer
// of pythanos.promtemplate: one JSON request per input line, one JSON answer per output line, the
// text base64-encoded so bytes that are not UTF-8 survive.
//
//	{"text": "...", "name": "A", "labels": {...}, "external_labels": {...},
//	 "external_url": "http://...", "value": "NaN", "ts_ms": 1700000000123,
//	 "query": {"result": [{"labels": {...}, "value": "1.5"}], "error": ""}}
//	-> {"out": "<base64>"}
//
// With "query", a template's query calls answer that vector (or that error) whatever the
// expression; without it no query engine is attached and they fail as Prometheus' do then.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/template"
)

type request struct {
	Text           string            `json:"text"`
	Name           string            `json:"name"`
	Labels         map[string]string `json:"labels"`
	ExternalLabels map[string]string `json:"external_labels"`
	ExternalURL    string            `json:"external_url"`
	Value          string            `json:"value"`
	TsMs           int64             `json:"ts_ms"`
	Query          *query            `json:"query"`
}

type query struct {
	Result []struct {
		Labels map[string]string `json:"labels"`
		Value  string            `json:"value"`
	} `json:"result"`
	Error string `json:"error"`
}

type answer struct {
	Out []byte `json:"out"`
}

var preamble = []string{
	"{{$labels := .Labels}}",
	"{{$externalLabels := .ExternalLabels}}",
	"{{$externalURL := .ExternalURL}}",
	"{{$value := .Value}}",
}

func render(r request) string {
	v, err := strconv.ParseFloat(r.Value, 64)
	if err != nil {
		return "bad value: " + err.Error()
	}
	u, err := url.Parse(r.ExternalURL)
	if err != nil {
		return "bad external URL: " + err.Error()
	}
	data := template.AlertTemplateData(r.Labels, r.ExternalLabels, r.ExternalURL, promql.Sample{F: v})
	var queryFn template.QueryFunc
	if q := r.Query; q != nil {
		queryFn = func(_ context.Context, _ string, ts time.Time) (promql.Vector, error) {
			if q.Error != "" {
				return nil, errors.New(q.Error)
			}
			vec := promql.Vector{}
			for _, s := range q.Result {
				f, err := strconv.ParseFloat(s.Value, 64)
				if err != nil {
					return nil, err
				}
				vec = append(vec, promql.Sample{Metric: labels.FromMap(s.Labels), F: f, T: ts.UnixMilli()})
			}
			return vec, nil
		}
	}
	exp := template.NewTemplateExpander(context.Background(), strings.Join(append(preamble, r.Text), ""),
		"__alert_"+r.Name, data, model.Time(r.TsMs), queryFn, u, nil)
	out, err := exp.Expand()
	if err != nil {
		return fmt.Sprintf("<error expanding template: %s>", err)
	}
	return out
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	w := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(w)
	for in.Scan() {
		var r request
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			fmt.Fprintln(os.Stderr, "bad request:", err)
			os.Exit(2)
		}
		if err := enc.Encode(answer{Out: []byte(render(r))}); err != nil {
			fmt.Fprintln(os.Stderr, "write:", err)
			os.Exit(1)
		}
	}
	if err := w.Flush(); err != nil {
		os.Exit(1)
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "read:", err)
		os.Exit(2)
	}
}
