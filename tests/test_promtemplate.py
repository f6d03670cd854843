"""``pythanos.promtemplate``: alert templates rendered as a real Prometheus 3.9.1 renders them.

The proof: a real Prometheus evaluates alert rules whose ``expr`` yields edge values (NaN, ±Inf, 0,
1e300, 1e-300, negatives, durations, timestamps) and label values with special characters, and
whose annotations use every template function, ``printf`` verb and control structure, plus
templates that fail at execution. Its ``/api/v1/rules`` (alerts with their annotations and the
rule's evaluation time) is compared with :func:`expand_alert` given the same labels, value and
time; ``query`` runs against the same Prometheus. Rule-file syntax errors are compared with
Prometheus 3.9.1's ``promtool check rules``.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import math
import random
import re
import subprocess
import time
import urllib.parse

import pytest
import yaml

from peers import find_binary, http_get, missing, peers_dir
from pythanos.promtemplate import PREAMBLE, TemplateError, expand_alert, parse
from pythanos.promtemplate.printf import format_float, sprintf

pytestmark = pytest.mark.timeout(300)

EXTERNAL_URL = "http://prom.example:9090/some/prefix"
EXTERNAL_LABELS = {"region": "eu-1", "odd": 'q"x\\y'}

# values the rules' expressions yield (PromQL text, for vector(...))
VALUES = ["1", "0", "-0", "NaN", "+Inf", "-Inf", "1e300", "-1e300", "1e-300", "5e-324", "1.5e-10", "0.000123",
          "123456789", "-42.5", "3661.123", "34566000.5", "1700000000.123", "0.5", "1023", "1024",
          "1048577", "-1e-7", "9.2e18", "2e-9", "59.99999"]

# templates evaluated on every value
NUMBER_TEMPLATES = [
    "{{ $value }}",
    "{{ .Value }}|{{ $value | print }}|{{ println $value }}",
    "{{ humanize $value }}",
    "{{ humanize1024 $value }}",
    "{{ humanizeDuration $value }}",
    "{{ humanizePercentage $value }}",
    "{{ humanizeTimestamp $value }}",
    "{{ toTime $value }}",
    "{{ toDuration $value }}",
    "{{ printf \"%v|%s|%d|%f|%.2f|%g|%e|%E|%G|%t|%x|%X|%q|%%\" $value $value $value $value $value $value $value $value $value $value $value $value $value }}",
    "{{ printf \"[%10.3f][%-12.2e][%+g][%08.3f][% .1f][%#g][%#v][%T][%.0f][%.10g][%5.1g][%b]\" $value $value $value $value $value $value $value $value $value $value $value $value }}",
    "{{ printf \"%6.2f%%\" $value }}",
    "{{ if gt $value 0.0 }}pos{{ else if lt $value 0.0 }}neg{{ else }}zero-or-nan{{ end }}",
    "{{ if $value }}truthy{{ else }}falsy{{ end }} {{ not $value }} {{ and $value \"x\" }} {{ or $value \"y\" }}",
    "{{ eq $value 1.0 }} {{ ne $value 0.0 }} {{ le $value 1e300 }} {{ ge $value -1e300 }}",
    "{{ with $value }}{{ . }}{{ else }}empty{{ end }}",
    "{{ $value | humanize | printf \"%q\" }}",
    "{{ $v := $value }}{{ $v = printf \"%.3g\" $v }}{{ $v }}",
    "{{ (toTime $value).Unix }}",
    "{{ (toDuration $value).Seconds }}",
    # errors at execution
    "{{ eq $value 1 }}",
    "{{ index . 5 }}",
    "{{ $value.Foo }}",
    "{{ toUpper $value }}",
    "{{ len $value }}",
    "{{ humanize \"x\" }}",
]

# templates evaluated on label values with special characters
LABEL_VALUES = ['a"b\\c\n<é>&\'=', "host.example.com:9090", "10.0.0.1:80", "[::1]:9100", "plain",
                "ünïcødé ŁÓD 世界 \u00a0nbsp", "word_one two-three four.five 1st", "", "a%b+c d/e?f=g#h",
                "1.5e3", "$1 ${x} $$", "straße İstanbul ǅ ᾀ ŉ ﬀ Σσς"]
STRING_TEMPLATES = [
    "{{ $labels.l }}",
    "{{ $labels.l | printf \"%q|%s|%x|%X|% x|%10s|%-10s|%.3s|%v|%d\" $labels.l $labels.l $labels.l $labels.l $labels.l $labels.l $labels.l $labels.l }}",
    "{{ html $labels.l }}|{{ js $labels.l }}|{{ urlquery $labels.l }}|{{ urlQueryEscape $labels.l }}",
    "{{ title $labels.l }}|{{ toUpper $labels.l }}|{{ toLower $labels.l }}",
    "{{ reReplaceAll \"(\\\\w+)\" \"<$1>\" $labels.l }}|{{ reReplaceAll \"x*\" \"-\" $labels.l }}|{{ match \"^a\" $labels.l }}",
    "{{ graphLink $labels.l }}|{{ tableLink $labels.l }}|{{ safeHtml $labels.l }}",
    "{{ stripPort $labels.l }}|{{ stripDomain $labels.l }}",
    "{{ humanize $labels.l }}",
    "{{ len $labels.l }}|{{ index $labels.l 0 }}|{{ slice $labels.l 1 }}",
    "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}|{{ len $labels }}|{{ $labels }}",
    "{{ if eq $labels.l \"plain\" \"\" }}listed{{ else }}other{{ end }}|{{ lt $labels.l \"m\" }}",
    "{{ $labels.missing }}|{{ .Labels.missing }}|{{ index $labels \"missing\" }}",
    "{{ parseDuration $labels.l }}",
    "{{ reReplaceAll $labels.l \"x\" \"abc\" }}",
]

# templates that do not depend on the sample
FIXED_TEMPLATES = [
    "{{ $externalLabels.region }}|{{ $externalLabels }}|{{ $externalURL }}|{{ externalURL }}|{{ pathPrefix }}",
    "{{ now }}|{{ now | humanizeTimestamp }}|{{ (now | toTime).Year }}",
    "{{ with query \"vector(3)\" }}{{ . | first | value }}{{ end }}",
    "{{ range query \"label_replace(vector(2), 'instance', 'h:1', '', '') or label_replace(vector(1), 'instance', 'g:2', '', '')\" | sortByLabel \"instance\" }}{{ label \"instance\" . }}={{ value . }};{{ end }}",
    "{{ (query \"vector(1) > 2\") | len }}",
    "{{ query \"vector(1) > 2\" | first }}",
    "{{ query \"bad((\" }}",
    "{{ query \"1.5\" | first | value }}",
    "{{ with query \"label_replace(vector(7), '__value__', 'sv', '', '')\" }}{{ . | first | strvalue }}{{ end }}",
    "{{ args 1 \"a\" 2.5 nil }}|{{ (args 1 2).arg1 }}|{{ (args 1).nope }}",
    "{{ define \"t\" }}[{{ . }}]{{ end }}{{ template \"t\" \"x\" }}{{ template \"t\" }}",
    "{{ block \"b\" 5 }}<{{ . }}>{{ end }}",
    "{{ range $i, $e := args 1 2 3 }}{{ $i }}:{{ $e }}{{ if eq $i \"arg1\" }}{{ break }}{{ end }},{{ end }}",
    "{{ range $i := 4 }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ $i }}{{ end }}",
    "{{ range $labels.none }}x{{ else }}empty{{ end }}",
    "{{ print 1 2 \"x\" 3.5 nil true }}|{{ println \"a\" 1 }}|{{ 1 | printf \"%d %d\" 2 }}",
    "{{ and 1 0 \"x\" }}|{{ or 0 \"\" \"y\" }}|{{ not 0 }}|{{ and }}",
    "{{ lt \"a\" \"b\" }}|{{ ge 2 2 }}|{{ ne 1 2 }}|{{ eq \"a\" \"b\" \"a\" }}|{{ lt 1 2.0 }}",
    "{{ printf \"%[2]d %[1]s\" \"a\" 1 }}|{{ printf \"%d\" }}|{{ printf \"%d\" 1 2 }}|{{ printf \"%!\" }}|{{ printf \"%z\" 1 }}|{{ printf \"%-5d|%05d|%x|%o|%b|%c|%U|%q\" 42 -42 255 8 5 65 9731 65 }}",
    "{{ printf \"%v %v %v %s\" nil true 'a' \"s\" }}|{{ printf \"%d\" \"s\" }}|{{ printf \"%s\" 1 }}|{{ printf \"%t\" 1 }}|{{ printf \"%.2s\" \"abc\" }}",
    "{{ 1.5 }}|{{ 0x1F }}|{{ 1e3 }}|{{ 'x' }}|{{ -0.0 }}|{{ 1_000 }}|{{ 0o17 }}|{{ 1e-7 }}",
    "{{ \"quoted\\ttab\" }}|{{ `raw\\n` }}",
    "a  {{- \" trimmed \" -}}  b {{/* comment */}} c {{- /* trimmed comment */ -}} d",
    "{{ call $value }}",
    "{{ index \"abc\" 3 }}",
    "{{ index (args 1).arg0 0 }}",
    "{{ slice \"abc\" 2 1 }}",
    "{{ template \"nope\" }}",
    "{{ nil }}",
    "{{ .Labels.x.y }}",
    "{{ $value | toUpper }}",
    "{{ humanize true }}",
    "{{ toTime 1e300 }}",
    "{{ toDuration \"90\" }}|{{ toDuration 1e300 }}",
    "{{ parseDuration \"1h30m\" }}|{{ parseDuration \"-5m\" }}|{{ parseDuration \"0\" }}|{{ parseDuration \"1y2w3d4h5m6s7ms\" }}",
    "{{ parseDuration \"\" }}",
    "{{ parseDuration \"1x\" }}",
    "{{ parseDuration \"5m1h\" }}",
    "{{ reReplaceAll \"(\" \"x\" \"y\" }}",
    "{{ reReplaceAll \"\\\\B\" \"-\" \"héllo wörld\" }}|{{ reReplaceAll \"\" \"_\" \"日本\" }}|{{ reReplaceAll \"(?P<w>\\\\pL+)\" \"${w}!$$\" \"ab cd\" }}",
    "{{ match \"[\" \"y\" }}",
    "{{ sortByLabel \"x\" (query \"vector(1)\") | len }}",
    "{{ first (query \"vector(1)\") }}",
    "{{ \"x\" | printf \"%s-%s\" \"y\" }}",
    "{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}",
    "{{ with $x := 5 }}{{ $x }}{{ end }}{{ with 0 }}no{{ else with 1 }}one{{ end }}",
    "{{ html 1 2 }}|{{ js nil }}|{{ urlquery \"a\" 1 }}|{{ html (safeHtml \"<b>\") }}",
    "{{ len (args) }}|{{ index (args 5) \"arg0\" }}",
    "{{ eq (args) (args) }}",
    "{{ .ExternalURL }}|{{ .ExternalLabels.region }}",
    "{{ $ }}",
    '{{ define "r" }}x{{ template "r" . }}{{ end }}{{ template "r" }}',
    '{{ define "a" }}{{ template "b" . }}{{ end }}{{ define "b" }}{{ template "a" . }}{{ end }}{{ template "a" 1 }}',
    '{{ (now | toTime).Format "Mon Jan _2 15:04:05.000 MST 2006" }}|{{ (toTime 1e9).Month }}|{{ (toTime 86400).Weekday }}',
]


def _rule_yaml() -> tuple[str, dict[str, dict]]:
    """The rule file, and per alert name what the templates were given (labels, or None for the
    alert's own)."""
    rules = []
    meta: dict[str, dict] = {}
    for i, v in enumerate(VALUES):
        name = f"Num{i}"
        anns = {f"t{k:02d}": t for k, t in enumerate(NUMBER_TEMPLATES)}
        rules.append({"alert": name, "expr": f"vector({v})", "annotations": anns,
                      "labels": {"sev": "{{ $value | humanize }}", "static": "s"}})
        meta[name] = {"templates": anns, "static": {"static": "s"}, "label_templates": {"sev": "{{ $value | humanize }}"}}
    for i, lv in enumerate(LABEL_VALUES):
        name = f"Lbl{i}"
        anns = {f"t{k:02d}": t for k, t in enumerate(STRING_TEMPLATES)}
        promql_str = json.dumps(lv, ensure_ascii=False)  # a double-quoted PromQL string with JSON escapes
        rules.append({"alert": name, "expr": f"label_replace(vector(7), \"l\", {promql_str}, \"\", \"\")",
                      "annotations": anns})
        meta[name] = {"templates": anns, "static": {}, "label_templates": {}}
    anns = {f"t{k:02d}": t for k, t in enumerate(FIXED_TEMPLATES)}
    rules.append({"alert": "Fixed", "expr": "label_replace(vector(2.5), \"instance\", \"node-1.example.org:9100\", \"\", \"\")",
                  "annotations": anns})
    meta["Fixed"] = {"templates": anns, "static": {}, "label_templates": {}}
    return yaml.safe_dump({"groups": [{"name": "templates", "interval": "1s", "rules": rules}]},
                          allow_unicode=True, sort_keys=False), meta


def _rfc3339_ms(s: str) -> int:
    """``lastEvaluation`` (RFC 3339 with nanoseconds, UTC) in milliseconds."""
    head, _, frac = s.rstrip("Z").partition(".")
    t = dt.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp()) * 1000 + int((frac + "000")[:3])


def _eval_ms(rule: dict, alert: dict) -> int:
    """The timestamp the rule's last evaluation gave its templates. ``lastEvaluation`` is the wall
    clock when the rule started; evaluations run on the group's 1s grid, which ``activeAt`` (an
    evaluation time) pins: the last grid point at or before the wall clock."""
    last, active = _rfc3339_ms(rule["lastEvaluation"]), _rfc3339_ms(alert["activeAt"])
    return last - (last - active) % 1000


def _query_fn(base: str):
    """``query`` for expand_alert: the same PromQL against the same Prometheus at the same time."""

    def run(expr: str, ts_ms: int):
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{ts_ms / 1000:.3f}"})
        _, body = http_get(url, timeout=10)
        doc = json.loads(body)
        if doc["status"] != "success":
            # the HTTP API names the parameter; the rule manager's engine gives the error alone
            raise RuntimeError(doc["error"].removeprefix('invalid parameter "query": '))
        res = doc["data"]
        if res["resultType"] == "scalar":
            return [({}, float(res["result"][1]))]
        if res["resultType"] != "vector":
            raise RuntimeError("rule result is not a vector or scalar")
        return [(s["metric"], float(s["value"][1])) for s in res["result"]]

    return run


@pytest.fixture(scope="module")
def prometheus_rules(prometheus3_bin, tmp_path_factory):
    """A real Prometheus 3.9.1 evaluating the template rules every second; yields (url, meta)."""
    from peers import REGISTRY, start_on_free_ports

    work = tmp_path_factory.mktemp("promtemplate")
    text, meta = _rule_yaml()
    (work / "rules.yml").write_text(text)
    ext = "\n".join(f"    {k}: {json.dumps(v)}" for k, v in EXTERNAL_LABELS.items())
    (work / "prometheus.yml").write_text(
        f"global:\n  evaluation_interval: 1s\n  external_labels:\n{ext}\nrule_files:\n  - {work / 'rules.yml'}\n")

    def launch(ports):
        args = [prometheus3_bin, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{ports[0]}", f"--web.external-url={EXTERNAL_URL}",
                "--web.route-prefix=/"]
        p = REGISTRY.start("prometheus3-templates", args, work)
        p.url = f"http://127.0.0.1:{ports[0]}"
        return p

    p = start_on_free_ports(1, launch, lambda p: p.wait_http_ready("/-/ready", 90))
    try:
        yield p.url, meta
    finally:
        p.stop()


def _alerts_snapshot(url: str, want: int, timeout: float = 60.0) -> list[tuple[int, dict]]:
    """(evaluation time in ms, alert) for every alert once every rule has one."""
    deadline = time.monotonic() + timeout
    while True:
        _, body = http_get(url + "/api/v1/rules?type=alert", timeout=10)
        # Prometheus' JSON passes bytes of invalid UTF-8 through (slicing a string mid-rune makes them)
        doc = json.loads(body.decode("utf-8", "surrogateescape"))
        rules = [r for g in doc["data"]["groups"] for r in g["rules"]]
        out = [(_eval_ms(r, a), a) for r in rules for a in r.get("alerts", [])]
        if len(out) >= want:
            return out
        assert time.monotonic() < deadline, f"only {len(out)} of {want} alerts after {timeout}s"
        time.sleep(0.2)


def _ours(url: str, meta: dict, ts_ms: int, alert: dict) -> tuple[dict, dict]:
    """Our labels and annotations for one alert of the real Prometheus."""
    name = alert["labels"]["alertname"]
    m = meta[name]
    sample_labels = {k: v for k, v in alert["labels"].items()
                     if k != "alertname" and k not in m["static"] and k not in m["label_templates"]}
    value = float(alert["value"])
    q = _query_fn(url)

    def render(t: str) -> str:
        return expand_alert(t, name=name, labels=sample_labels, external_labels=EXTERNAL_LABELS,
                            external_url=EXTERNAL_URL, value=value, timestamp_ms=ts_ms, query=q)

    labels = dict(sample_labels, alertname=name, **m["static"])
    labels.update({k: render(t) for k, t in m["label_templates"].items()})
    return labels, {k: render(t) for k, t in m["templates"].items()}


def test_alert_templates_render_as_prometheus(prometheus_rules):
    url, meta = prometheus_rules
    want = len(meta)
    mismatches: list = []
    for _attempt in range(5):  # now-dependent texts may race an evaluation: compare a fresh snapshot
        mismatches = []
        snap = _alerts_snapshot(url, want)
        assert {a["labels"]["alertname"] for _, a in snap} == set(meta)
        for ts_ms, alert in snap:
            labels, anns = _ours(url, meta, ts_ms, alert)
            if labels != alert["labels"]:
                mismatches.append((alert["labels"]["alertname"], "labels", alert["labels"], labels))
            for k, theirs in alert["annotations"].items():
                if anns.get(k) != theirs:
                    mismatches.append((alert["labels"]["alertname"], k, meta[alert["labels"]["alertname"]]["templates"][k],
                                       theirs, anns.get(k)))
        if not mismatches:
            break
    assert not mismatches, "\n".join(repr(m) for m in mismatches[:40]) + f"\n({len(mismatches)} in all)"
    # the table exercised what it claims: errors included, every function used
    texts = [a for _, al in _alerts_snapshot(url, want) for a in al["annotations"].values()]
    assert sum("<error expanding template" in t for t in texts) > 20
    used = " ".join(t for m in meta.values() for t in m["templates"].values())
    from pythanos.promtemplate.funcs import FUNC_NAMES
    assert not [f for f in FUNC_NAMES if f not in used], "functions not in the table"


# ------------------------------------------------------------------------------------ parse errors

BAD_TEMPLATES = [
    "{{ nope }}", "{{ if }}", "{{ end }}", "{{ .Labels", "{{ $undefined }}", "{{ range }}{{ end }}",
    "{{ if 1 }}", "{{ else }}", "{{ 1 2 | 3 }}", "{{ (1 }}", "{{ 1) }}", "{{ \"unterminated }}",
    "{{ `raw }}", "{{ 'ab' }}", "{{ 0x }}", "{{ 1.2.3 }}", "{{ break }}", "{{ range . }}{{ continue 1 }}{{ end }}",
    "{{ define \"x\" }}{{ end }}{{ define \"x\" }}a{{ end }}{{ define \"x\" }}b{{ end }}", "{{/* unclosed }}",
    "{{/* a */ x }}", "{{ $x := 1 }}{{ $x.y.z := 2 }}", "{{ template }}", "{{ template x }}", "{{ with }}",
    "line1\n{{ if true }}\nline3\n{{ else }}{{ else }}{{ end }}", "{{ .a..b }}", "{{ .a | $ }}x{{ end }}",
    "{{ 99999999999999999999 }}", "{{ # }}", "{{ é }}", "{{ a-b }}", "{{ \"\\z\" }}", "{{ nil.x }}",
    "{{ $x, $y := 1 }}", "{{ range $a, $b, $c := . }}{{ end }}", "{{ block \"x\" }}{{ end }}", "{{ :x }}",
    "{{ if true }}{{ else if }}{{ end }}", "{{ 1 | 2 }}", "{{ print | . }}",
]


def test_parse_errors_as_promtool(promtool3_bin, tmp_path):
    """Every bad template is refused by ours with the text Prometheus 3.9.1's promtool prints."""
    for i, t in enumerate(BAD_TEMPLATES):
        f = tmp_path / f"r{i}.yml"
        f.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
            {"alert": "A", "expr": "vector(1)", "annotations": {"x": t}}]}]}))
        out = subprocess.run([promtool3_bin, "check", "rules", str(f)], capture_output=True, text=True)
        assert out.returncode != 0, t
        with pytest.raises(TemplateError) as e:
            parse(PREAMBLE + t, "__alert_A")
        theirs = [ln for ln in (out.stdout + out.stderr).splitlines() if 'annotation "x": ' in ln]
        assert theirs, (t, out.stdout, out.stderr)
        assert theirs[0].split('annotation "x": ', 1)[1] == e.value.go_error, t


def test_parse_accepts_what_promtool_accepts(promtool3_bin, tmp_path):
    templates = NUMBER_TEMPLATES + STRING_TEMPLATES + FIXED_TEMPLATES
    f = tmp_path / "ok.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "A", "expr": "vector(1)", "annotations": {f"a{i}": t for i, t in enumerate(templates)}}]}]}))
    out = subprocess.run([promtool3_bin, "check", "rules", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for t in templates:
        parse(PREAMBLE + t, "__alert_A")


# ------------------------------------------------------------------------------------ engine units

def test_expand_error_text_names_template_and_position():
    got = expand_alert("x\n  {{ index . 5 }}", name="HighLoad", labels={}, external_labels={}, external_url="",
                       value=1.0, timestamp_ms=0)
    assert got.startswith("<error expanding template: error executing template __alert_HighLoad: template: "
                          "__alert_HighLoad:2:5: executing \"__alert_HighLoad\" at <index . 5>: error calling index: ")
    got = expand_alert("{{ nope }}", name="A", labels={}, external_labels={}, external_url="", value=1.0, timestamp_ms=0)
    assert got == ('<error expanding template: error parsing template __alert_A: template: __alert_A:1: '
                   'function "nope" not defined>')


def test_parse_cache_and_errors():
    parse(PREAMBLE + "{{ $labels.x }}", "n")
    with pytest.raises(TemplateError) as e:
        parse("{{ $labels.x }}", "n")  # no preamble: $labels is undefined
    assert str(e.value) == 'error parsing template n: template: n:1: undefined variable "$labels"'
    assert e.value.go_error == 'template: n:1: undefined variable "$labels"'


def test_query_called_with_the_evaluation_time():
    seen = []

    def q(expr, ts):
        seen.append((expr, ts))
        return [({"instance": "b"}, 2.0), ({"instance": "a"}, 1.0)]

    got = expand_alert('{{ range query "up" | sortByLabel "instance" }}{{ .Labels.instance }}{{ end }}', name="A",
                       labels={}, external_labels={}, external_url="", value=0.0, timestamp_ms=1234, query=q)
    assert got == "ab" and seen == [("up", 1234)]
    got = expand_alert('{{ query "up" }}', name="A", labels={}, external_labels={}, external_url="", value=0.0,
                       timestamp_ms=1, query=lambda e, t: (_ for _ in ()).throw(RuntimeError("boom")))
    assert got.endswith('executing "__alert_A" at <query "up">: error calling query: boom>')


def test_float_formatting_against_reprs():
    """strconv's shortest forms round-trip (the peer test compares the texts themselves)."""
    for v in (1e300, 5e-324, 0.1, 123456.0, 1e6, 1e-5, 1.7976931348623157e308, -2.5):
        s = format_float(v, "g", -1)
        assert float(s) == v
    assert sprintf("%v|%v|%v", [math.nan, math.inf, -math.inf]) == "NaN|+Inf|-Inf"


# ------------------------------------------------------------------------------------ random templates

@pytest.fixture(scope="session")
def promtemplate_render_bin() -> str:
    """Prometheus 3.9.1's template package behind a line protocol (scripts/peers.sh builds it)."""
    return find_binary(peers_dir() / "bin" / "promtemplate-render") or missing(
        f"promtemplate-render in {peers_dir()}/bin (scripts/peers.sh)")


class _Gen:
    """Random alert templates: pipelines of every function and verb over edge values, control
    structures, and (some of them) mutated into syntax errors."""

    VALUES = ["1", "0", "-0", "NaN", "+Inf", "-Inf", "1e300", "1e-300", "5e-324", "123456789", "-42.5",
              "3661.123", "0.5", "1e21", "1e20", "999999.5", "1e-5", "0.0001", "1.7976931348623157e308", "2.5",
              "100", "1e6", "-1e-7", "9.2e18", "9.3e18", "-9.3e18", "86399.9999", "0.1", "1e100"]
    STRS = ['"abc"', '"a\\"b"', '"héllo wörld"', '""', '"1.5"', '"%d"', '"x y"', '"<&>"', '"\\n\\t"', '`raw`',
            '"日本語"', '"0x1F"', '"1_000"', '"inf"', '"-Inf"', '"NaN"', '"1e400"', '"1h30m"', '"-5m"', '"abc:123"',
            '"[::1]:80"', '"a.b.c"', '"straße"']
    NUMS = ["0", "1", "-1", "2", "3", "1.5", "-2.5", "1e3", "0x10", "'a'", "255", "1e-7", "100000000",
            "9223372036854775807", "-0.0", "0.1", "1_000", "0o17", "'\\n'"]
    FMTS = ["%v", "%s", "%d", "%f", "%.2f", "%g", "%e", "%E", "%G", "%q", "%x", "%X", "%t", "%c", "%U", "%o",
            "%b", "%5d", "%-5d|", "%05d", "%+d", "% d", "%8.3f", "%-8.3f|", "%+.1e", "%#v", "%T", "%10s|",
            "%-10s|", "%.3s", "%#x", "%# x", "%.0f", "%.10g", "%#g", "%08.3f", "%+08.2f", "% 08.2f", "%6.2f%%",
            "%[2]v %[1]v", "%*d", "%.*f", "%!", "%", "%z", "%#q", "%+q", "%3c", "%#o", "%O", "%#U", "%v %v",
            "%010.4e", "%.3g", "%12.5G|", "% x", "%-#10x|", "%[3]d", "%[x]d", "%.[2]f"]
    FUNCS1 = ["humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp",
              "toTime", "toDuration", "title", "toUpper", "toLower", "stripPort", "stripDomain",
              "urlQueryEscape", "graphLink", "tableLink", "safeHtml", "len", "not", "html", "js", "urlquery",
              "print", "println", "parseDuration"]
    RX = ['"(a|b)"', '"x*"', '"^."', '"(?P<n>l+)"', '"("', '"[a-z]+"', '"\\\\b"']
    REP = ['"$1"', '"<${1}>"', '"$n"', '"$$"', '"-"', '"$1x"']
    STRUCT = [
        '{{ define "t" }}<{{ . }}>{{ end }}{{ template "t" P }}',
        '{{ block "b" P }}[{{ . }}]{{ end }}',
        '{{ $x := P }}{{ $x }}{{ $x = 1 }}{{ $x }}',
        '{{ range $k, $v := $labels }}{{ $k }}:{{ $v }}{{ if eq $k "a" }}{{ continue }}{{ end }}!{{ end }}',
        '{{ range $labels }}{{ . }}{{ break }}{{ end }}',
        '{{ range $i := 3 }}{{ $i }}{{ end }}',
        '{{ with $x := P }}{{ $x }}{{ else with P }}W{{ else }}N{{ end }}',
        '{{ if P }}a{{ else if P }}b{{ else }}c{{ end }}',
        '{{/* c */}}x{{- /* d */ -}} y',
        '  {{- P -}}  ',
        '{{ template "nope" }}',
        '{{ $ }}',
        '{{ .Labels.a }}{{ .Nope }}',
        '{{ $labels.a.b }}',
        '{{ (P).X }}',
        '{{ print (P) (P) }}',
        '{{ len (args P P) }}{{ (args P).arg0 }}{{ range $k, $v := args P P }}{{ $k }}={{ $v }}{{ end }}',
        '{{ call P }}',
        '{{ with query "up" }}{{ . }}{{ end }}',
        '{{ range $i, $e := P }}{{ $i }}={{ $e }};{{ else }}none{{ end }}',
        '{{ (toTime P).Format "2006-01-02T15:04:05.000Z07:00 Mon Jan _2 3:4:5PM pm MST -0700 -07:00 .999 ,000 002 __2 06 1 2 _2006" }}',
        '{{ (toTime P).Format "Monday January 02 03 04 05 15 .0 .9 Z0700 Z07 -07 -070000 January2006" }}',
        '{{ with toTime P }}{{ .Year }} {{ .Month }} {{ .Day }} {{ .Weekday }} {{ .YearDay }} {{ .Hour }}:{{ .Minute }}:{{ .Second }}.{{ .Nanosecond }} {{ .Unix }} {{ .UnixMilli }} {{ printf "%d %v" .Month .Weekday }}{{ end }}',
        '{{ with toDuration P }}{{ .Seconds }} {{ .Minutes }} {{ .Hours }} {{ .Milliseconds }} {{ .String }}{{ end }}',
        '{{ define "r" }}x{{ template "r" . }}{{ end }}{{ template "r" P }}',
        '{{ range query "x" | sortByLabel "instance" }}{{ label "instance" . }}={{ value . }} {{ .Labels }} {{ .Value }};{{ end }}',
        '{{ with query "x" }}{{ . | first | value | humanize }}|{{ (first .).Labels.job }}|{{ first . }}{{ else }}none{{ end }}',
        '{{ query "x" | first | strvalue }}|{{ len (query "x") }}|{{ index (query "x") 0 }}',
        '{{ range $i, $s := sortByLabel "job" (query "x") }}{{ $i }}:{{ $s.Value }}:{{ $s.Labels.job }} {{ end }}',
        '{{ query P }}|{{ (query "x") | slice }}',
        '{{-3}}|{{3 -}} |{{ 3-}}|{{- 3}} |a {{- "b" }} c {{- /* x */}}d',
        '{{ $a := 1 }}{{ range $i := args 1 2 }}{{ $a = $i }}{{ end }}{{ $a }}{{ with $a }}{{ $a := 5 }}{{ $a }}{{ end }}{{ $a }}',
        '{{ template "t2" P }}{{ define "t2" }}{{ $ }}|{{ . }}|{{ $.Labels }}{{ end }}',
        '{{ N }} {{ N }} {{ printf "%v %T" N N }}',
        '{{ printf FMT P P }}',
        '{{ printf SPEC P P P }}',
        '{{ printf SPEC $value 255 "héllo" }}{{ printf SPEC -0.0 true (1+2i) }}',
    ]
    NUMLITS = ["1e", "0x", "1.2.3", "08", "0b102", "1i", "1+2i", "'\\x41'", "'\\u00e9'", "'ab'", "0x1p-2", "0X1P+2",
               "1_0_0", "_1", "1__0", ".5", "5.", "-.5", "+5", "0b101", "0o8", "1e308", "1e309", "-0x10", "0.0e0",
               "9223372036854775808", "18446744073709551615", "18446744073709551616", "'\\''", "''", "2i", "1e3i"]

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def spec(self) -> str:
        """A random printf verb: flags, argument index, width, precision (numbers or *)."""
        r = self.r
        f = "%" + "".join(fl for fl in "#0+- " if r.random() < 0.15)
        if r.random() < 0.1:
            f += f"[{r.randint(0, 3)}]"
        if r.random() < 0.4:
            f += str(r.randint(0, 25)) if r.random() < 0.9 else "*"
        if r.random() < 0.4:
            f += "." + (str(r.randint(0, 20)) if r.random() < 0.9 else "*")
        return f + r.choice("vvsdfFeEgGxXqtcbouUT%")

    def operand(self, d: int = 0) -> str:
        r, c = self.r.random(), self.r.choice
        if r < 0.25:
            return c(["$value", ".Value", "$labels.a", "$labels.b", "$labels.missing", "$externalURL",
                      ".ExternalURL", "$externalLabels.region", "$labels", ".", ".Labels", "$externalLabels",
                      "(args 1 \"a\")", "(query \"x\")", "(toTime 1.5)", "(toDuration 90)", "(safeHtml \"<b>\")",
                      "(index \"ab\" 0)", "$", "(first (query \"x\"))"])
        if r < 0.45:
            return c(self.STRS)
        if r < 0.65:
            return c(self.NUMS)
        if r < 0.7:
            return c(["true", "false", "nil"])
        return "(" + self.pipeline(d + 1) + ")" if d < 2 else "$value"

    def pipeline(self, d: int = 0) -> str:
        r, c, o = self.r.random(), self.r.choice, self.operand
        if r < 0.3:
            return f"{c(self.FUNCS1)} {o(d)}"
        if r < 0.45:
            return f'printf "{c(self.FMTS)}"' + "".join(" " + o(d) for _ in range(self.r.randint(0, 3)))
        if r < 0.55:
            return f"{c(['eq', 'ne', 'lt', 'le', 'gt', 'ge'])} {o(d)} {o(d)}"
        if r < 0.62:
            return f"{c(['and', 'or'])} {o(d)} {o(d)}"
        if r < 0.7:
            return f"index {o(d)} {o(d)}"
        if r < 0.75:
            return f"slice {o(d)} {c(self.NUMS[:5])} {c(self.NUMS[:5])}"
        if r < 0.8:
            return f"reReplaceAll {c(self.STRS + self.RX)} {c(self.REP)} {o(d)}"
        if r < 0.85:
            return f"{o(d)} | {c(self.FUNCS1)}"
        if r < 0.9:
            return f"match {c(self.STRS + self.RX)} {o(d)}"
        return o(d)

    def template(self) -> str:
        if self.r.random() < 0.3:
            t = self.r.choice(self.STRUCT)
            while "P" in t:
                t = t.replace("P", self.pipeline(), 1)
            while " N " in t or "{{ N" in t:
                t = t.replace("N", self.r.choice(self.NUMLITS), 1)
            t = t.replace("FMT", '"' + "".join(self.r.choice(self.FMTS) for _ in range(3)) + '"')
            t = t.replace("SPEC", '"' + "|".join(self.spec() for _ in range(self.r.randint(1, 3))) + '"')
        else:
            parts = []
            for _ in range(self.r.randint(1, 3)):
                parts.append("{{ " + self.pipeline() + " }}" + self.r.choice(["", " ", "|", "\n"]))
            t = "".join(parts)
        if self.r.random() < 0.25:
            t = self.mutate(t)
        return t

    def mutate(self, t: str) -> str:
        for _ in range(self.r.randint(1, 3)):
            i = self.r.randrange(len(t) + 1)
            r = self.r.random()
            if r < 0.4 and t:
                t = t[:i] + t[i + 1:]
            elif r < 0.8:
                t = t[:i] + self.r.choice(list("{}()|$.\"`'-: \n=,x1+/*")) + t[i:]
            else:
                t = t[:i] + self.r.choice(["{{", "}}", "{{-", "-}}", "{{ end }}", "{{ else }}", "{{ if 1 }}", "(",
                                           ")", " | ", ":=", "$y", "{{ break }}", "{{ define \"t\" }}"]) + t[i:]
        return t

    def query(self) -> "dict | None":
        """What the template's query calls answer: a vector, an error, or no query engine."""
        r, c = self.r.random(), self.r.choice
        if r < 0.3:
            return None
        if r < 0.4:
            return {"result": [], "error": c(["boom", "1:3: parse error: x%y", "query timed out"])}
        return {"result": [{"labels": {k: c(["a", "b", "", "h:1", "é"]) for k in self.r.sample(
                    ["instance", "job", "__value__", "__name__"], self.r.randint(0, 4))},
                            "value": c(self.VALUES)} for _ in range(self.r.randint(0, 4))], "error": ""}

    def case(self) -> dict:
        c = self.r.choice
        return {"text": self.template(), "query": self.query(), "name": c(["A", "High Load"] * 5 + ["x%y", "%"]),
                "labels": {"a": c(["x", "1.5", "host.ex.com:9090", "héllo", "", "10.0.0.1:80", 'a"b']),
                           "b": c(["y", "-3", "NaN"])},
                "external_labels": {"region": "eu-1"}, "external_url": EXTERNAL_URL,
                "value": c(self.VALUES), "ts_ms": c([1700000000123, 0, -1500, 253402300800000])}


# Go prints the pointers toTime/toDuration return, where a verb finds no String(), as addresses (a
# time.Time as its internals): no other program prints those, so addresses are masked and internals
# left out (and counted)
_ADDRESS = re.compile(r"(?:0x)?[0-9a-f]{9,}|(?<![\d.])\d{11,}(?![\d.])", re.IGNORECASE)


def _comparable(text: str, theirs: str, ours: str) -> "tuple[str, str] | None":
    if any(m in theirs and m not in text for m in ("&{", "%26%7B", "\\u0026{", "&amp;{")) or "time.Location" in theirs:
        # a Go struct's internals: a time.Time, or (a "%" in the alert name making a verb of it) the
        # parse node or reflect.Type an error message formats
        return None
    if "toTime" not in text and "toDuration" not in text and "query" not in text:
        return theirs, ours
    return _ADDRESS.sub("<addr>", theirs), _ADDRESS.sub("<addr>", ours)


def _canned(q: "dict | None"):
    """The query function answering what promtemplate-render's answers (None: no query engine)."""
    if q is None:
        return None

    def run(expr: str, ts_ms: int):
        if q["error"]:
            raise RuntimeError(q["error"])
        return [(s["labels"], float(s["value"])) for s in q["result"]]

    return run


def test_random_templates_render_as_prometheus_template_package(promtemplate_render_bin):
    cases = [c for g in (_Gen(seed) for seed in range(1, 4)) for c in (g.case() for _ in range(1500))]
    inp = "".join(json.dumps(c) + "\n" for c in cases).encode()
    out = subprocess.run([promtemplate_render_bin], input=inp, capture_output=True, timeout=120, check=True).stdout
    answers = [base64.b64decode(json.loads(line)["out"]).decode("utf-8", "surrogateescape")
               for line in out.splitlines()]
    assert len(answers) == len(cases)
    mismatches, skipped, errors = [], 0, 0
    for c, theirs in zip(cases, answers):
        errors += theirs.startswith("<error expanding template")
        ours = expand_alert(c["text"], name=c["name"], labels=c["labels"], external_labels=c["external_labels"],
                            external_url=c["external_url"], value=float(c["value"]), timestamp_ms=c["ts_ms"],
                            query=_canned(c["query"]))
        pair = _comparable(c["text"], theirs, ours)
        if pair is None:
            skipped += 1
            continue
        theirs, ours = pair
        if ours != theirs:
            mismatches.append((c["text"], c["value"], c["labels"], theirs, ours))
    assert not mismatches, "\n".join(repr(m) for m in mismatches[:20]) + f"\n({len(mismatches)} of {len(cases)})"
    assert skipped < len(cases) * 0.05, skipped
    # both outcomes are well represented: rendered texts, parse and execution errors
    assert len(cases) * 0.2 < errors < len(cases) * 0.8, errors


# ------------------------------------------------------------------------------------ thanos rule

THANOS_QUERY_URL = "http://thanos.example:10902/some%20where/q"
THANOS_TEMPLATES = [
    "{{ $externalURL }}|{{ $externalLabels }}|{{ .ExternalURL }}",
    "{{ externalURL }}",
    "{{ pathPrefix }}",
    "{{ with query \"vector(3)\" }}{{ . | first | value | humanize }}{{ end }}",
    "{{ now | humanizeTimestamp }}|{{ $value | humanizeDuration }}|{{ $labels.instance | stripDomain }}",
    "{{ printf \"%.3f %q\" $value $labels.instance }}",
]


def test_alert_templates_render_as_thanos_rule(prometheus_rules, thanos_bin, tmp_path):
    """``thanos rule`` gives its rule manager no URL: ``externalURL`` and ``pathPrefix`` fail there
    while ``$externalURL`` is ``--alert.query-url``; ours with ``template_url=None`` renders the same."""
    from peers import REGISTRY, start_on_free_ports

    prom_url, _ = prometheus_rules
    anns = {f"t{k}": t for k, t in enumerate(THANOS_TEMPLATES)}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "t", "interval": "1s", "rules": [
        {"alert": "Thx", "expr": 'label_replace(vector(2.5), "instance", "n1.example.org:9100", "", "")',
         "annotations": anns}]}]}))

    def launch(ports):
        h, g = ports
        p = REGISTRY.start("thanos-rule-templates", [
            thanos_bin, "rule", f"--http-address=127.0.0.1:{h}", f"--grpc-address=127.0.0.1:{g}",
            f"--data-dir={tmp_path / 'data'}", f"--rule-file={tmp_path / 'rules.yml'}",
            f"--query={prom_url.removeprefix('http://')}", "--eval-interval=1s", '--label=replica="a"',
            f"--alert.query-url={THANOS_QUERY_URL}"], tmp_path)
        p.url = f"http://127.0.0.1:{h}"
        return p

    p = start_on_free_ports(2, launch, lambda p: p.wait_http_ready("/-/ready", 60))
    try:
        mismatches: list = []
        for _attempt in range(5):
            mismatches = []
            (ts_ms, alert), = _alerts_snapshot(p.url, 1)
            labels = {k: v for k, v in alert["labels"].items() if k not in ("alertname", "replica")}
            assert labels == {"instance": "n1.example.org:9100"}
            for k, t in anns.items():
                ours = expand_alert(t, name="Thx", labels=labels, external_labels={"replica": "a"},
                                    external_url=THANOS_QUERY_URL, value=float(alert["value"]), timestamp_ms=ts_ms,
                                    query=_query_fn(prom_url), template_url=None)
                if ours != alert["annotations"][k]:
                    mismatches.append((t, alert["annotations"][k], ours))
            if not mismatches:
                break
        assert not mismatches, mismatches
        assert "nil pointer dereference" in alert["annotations"]["t1"]
    finally:
        p.stop()
