/**
 * The Prometheus text exposition format, version 0.0.4: what `/metrics` answers with.
 *
 * Written by hand rather than with prom-client (README, Dependencies): every value
 * procMonitor exports already lives in a counter of its own, read once per scrape, so all a
 * library would add is this formatting, at the price of start-up time and memory.
 *
 * @module
 */

/** The Content-Type of a text-format scrape. */
export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** A counter only goes up (its name ends in `_total`); a gauge goes up and down. */
export type MetricType = "counter" | "gauge";

/** One time series of a family: its labels (none for a plain metric) and value. */
export interface Sample {
  labels?: Readonly<Record<string, string>>;
  value: number;
}

/** A metric family: its name, HELP text, TYPE and samples. */
export interface MetricFamily {
  name: string;
  help: string;
  type: MetricType;
  samples: readonly Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * Renders `families` in the text format, each with its HELP and TYPE lines and then its
 * samples. A family without samples is left out: a TYPE with nothing under it says nothing.
 *
 * @throws {Error} when a metric or label name is not a valid Prometheus name, a label name
 *   starts with `__` (reserved), a counter's name does not end in `_total`, or a family
 *   comes twice: all
 *   mistakes in procMonitor's code, never in its input
 */
export function renderExposition(families: readonly MetricFamily[]): string {
  let text = "";
  const seen = new Set<string>();
  for (const family of families) {
    checkFamily(family);
    if (seen.has(family.name)) throw new Error(`The metric family ${family.name} comes twice`);
    seen.add(family.name);
    if (family.samples.length === 0) continue;
    text += `# HELP ${family.name} ${escapeHelp(family.help)}\n`;
    text += `# TYPE ${family.name} ${family.type}\n`;
    for (const sample of family.samples) {
      text += `${family.name}${renderLabels(sample.labels)} ${formatValue(sample.value)}\n`;
    }
  }
  return text;
}

function checkFamily(family: MetricFamily): void {
  if (!METRIC_NAME.test(family.name)) {
    throw new Error(`${JSON.stringify(family.name)} is not a valid metric name`);
  }
  if (family.type === "counter" && !family.name.endsWith("_total")) {
    throw new Error(`The counter ${family.name} needs a name ending in _total`);
  }
  for (const sample of family.samples) {
    for (const label of Object.keys(sample.labels ?? {})) {
      if (!LABEL_NAME.test(label) || label.startsWith("__")) {
        throw new Error(`${JSON.stringify(label)} is not a valid label name of ${family.name}`);
      }
    }
  }
}

function renderLabels(labels: Readonly<Record<string, string>> | undefined): string {
  if (labels === undefined) return "";
  const pairs = Object.entries(labels).map(([name, value]) => `${name}="${escapeLabel(value)}"`);
  return pairs.length === 0 ? "" : `{${pairs.join(",")}}`;
}

/** HELP text escapes only the backslash and the line feed. */
function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

/** A label value escapes the backslash, the double quote and the line feed. */
function escapeLabel(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/** A sample value as Go's ParseFloat reads it: `NaN`, `+Inf` and `-Inf` spelled its way. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
