/**
 * Unit tests of lib/outputs/exposition.ts: the Prometheus text format as Prometheus parses
 * it (HELP and TYPE lines, label escaping, special values) and the mistakes it refuses.
 */
import assert from "node:assert/strict";
import {
  EXPOSITION_CONTENT_TYPE,
  formatValue,
  type MetricFamily,
  renderExposition,
} from "../lib/outputs/exposition.ts";

Deno.test("renderExposition() writes HELP, TYPE, then the samples of each family", () => {
  const families: MetricFamily[] = [
    {
      name: "procmonitor_events_total",
      help: "Events by kind.",
      type: "counter",
      samples: [
        { labels: { event: "exec" }, value: 3 },
        { labels: { event: "exit" }, value: 0 },
      ],
    },
    { name: "procmonitor_clients", help: "Clients.", type: "gauge", samples: [{ value: 2 }] },
  ];
  assert.equal(
    renderExposition(families),
    "# HELP procmonitor_events_total Events by kind.\n" +
      "# TYPE procmonitor_events_total counter\n" +
      'procmonitor_events_total{event="exec"} 3\n' +
      'procmonitor_events_total{event="exit"} 0\n' +
      "# HELP procmonitor_clients Clients.\n" +
      "# TYPE procmonitor_clients gauge\n" +
      "procmonitor_clients 2\n",
  );
});

Deno.test("renderExposition() escapes backslash, quote and newline in label values", () => {
  const text = renderExposition([{
    name: "x_clients",
    help: "h",
    type: "gauge",
    samples: [{ labels: { listener: 'unix:/tmp/a"b\\c\nd', reason: "ok" }, value: 1 }],
  }]);
  assert.equal(text.split("\n")[2], 'x_clients{listener="unix:/tmp/a\\"b\\\\c\\nd",reason="ok"} 1');
});

Deno.test("renderExposition() escapes backslash and newline in HELP, not quotes", () => {
  const text = renderExposition([{
    name: "x",
    help: 'a "quoted" back\\slash\nsecond line',
    type: "gauge",
    samples: [{ value: 0 }],
  }]);
  assert.equal(text.split("\n")[0], '# HELP x a "quoted" back\\\\slash\\nsecond line');
});

Deno.test("renderExposition() leaves out a family without samples", () => {
  assert.equal(
    renderExposition([{ name: "x_total", help: "h", type: "counter", samples: [] }]),
    "",
  );
});

Deno.test("renderExposition() refuses a counter whose name does not end in _total", () => {
  assert.throws(
    () => renderExposition([{ name: "x_events", help: "h", type: "counter", samples: [] }]),
    { message: "The counter x_events needs a name ending in _total" },
  );
});

Deno.test("renderExposition() refuses invalid metric and label names and reserved labels", () => {
  const family = (name: string, label: string): MetricFamily => ({
    name,
    help: "h",
    type: "gauge",
    samples: [{ labels: { [label]: "v" }, value: 1 }],
  });
  assert.throws(() => renderExposition([family("1x", "a")]), /"1x" is not a valid metric name/);
  assert.throws(() => renderExposition([family("a-b", "a")]), /"a-b" is not a valid metric/);
  assert.throws(() => renderExposition([family("x", "a-b")]), /"a-b" is not a valid label name/);
  assert.throws(() => renderExposition([family("x", "__name")]), /"__name" is not a valid label/);
});

Deno.test("renderExposition() refuses a family that comes twice", () => {
  const family: MetricFamily = { name: "x", help: "h", type: "gauge", samples: [{ value: 1 }] };
  assert.throws(() => renderExposition([family, family]), {
    message: "The metric family x comes twice",
  });
});

Deno.test("formatValue() spells integers, fractions and special values as Prometheus reads them", () => {
  assert.equal(formatValue(0), "0");
  assert.equal(formatValue(9007199254740991), "9007199254740991");
  assert.equal(formatValue(0.25), "0.25");
  assert.equal(formatValue(NaN), "NaN");
  assert.equal(formatValue(Infinity), "+Inf");
  assert.equal(formatValue(-Infinity), "-Inf");
});

Deno.test("EXPOSITION_CONTENT_TYPE names text format version 0.0.4", () => {
  assert.equal(EXPOSITION_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
});
