// Command relabelcheck is the reference for tests/test_relabel.py: it parses relabel
// configurations and applies them with Prometheus' own model/relabel, exactly as
// Thanos' block.ParseRelabelConfig does (yaml.v2 Unmarshal, then Validate with UTF-8
// label names), and prints the results as JSON.
//
// Input (stdin): a JSON array of {"yaml": "...", "labels": {"name": "value", ...}, "legacy": bool}
// ("legacy" validates with legacy label names instead of UTF-8).
// Output (stdout): a JSON array of {"error": "..."} or {"keep": bool, "labels": {...}}.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"go.yaml.in/yaml/v2"
)

type testCase struct {
	YAML   string            `json:"yaml"`
	Labels map[string]string `json:"labels"`
	Legacy bool              `json:"legacy"`
}

type result struct {
	Error  string            `json:"error,omitempty"`
	Keep   bool              `json:"keep"`
	Labels map[string]string `json:"labels,omitempty"`
}

func run(tc testCase) (res result) {
	defer func() {
		if r := recover(); r != nil {
			res = result{Error: fmt.Sprintf("panic: %v", r)}
		}
	}()
	var cfgs []*relabel.Config
	if err := yaml.Unmarshal([]byte(tc.YAML), &cfgs); err != nil {
		return result{Error: "parsing relabel configuration: " + err.Error()}
	}
	scheme := model.UTF8Validation
	if tc.Legacy {
		scheme = model.LegacyValidation
	}
	for _, cfg := range cfgs {
		if cfg == nil {
			return result{Error: "validate relabel config: empty entry"}
		}
		if err := cfg.Validate(scheme); err != nil {
			return result{Error: "validate relabel config: " + err.Error()}
		}
	}
	out, keep := relabel.Process(labels.FromMap(tc.Labels), cfgs...)
	return result{Keep: keep, Labels: out.Map()}
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, errors.Join(errors.New("decoding input"), err))
		os.Exit(1)
	}
	results := make([]result, len(cases))
	for i, tc := range cases {
		results[i] = run(tc)
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
