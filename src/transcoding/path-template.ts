/**
 * Path templates of google.api.HttpRule:
 *
 *   Template = "/" Segments [ Verb ] ;  Segments = Segment { "/" Segment } ;
 *   Segment  = "*" | "**" | LITERAL | Variable ;
 *   Variable = "{" FieldPath [ "=" Segments ] "}" ;  Verb = ":" LITERAL ;
 */

/** One segment of a parsed template. */
export type TemplateSegment = { kind: "literal"; value: string } | { kind: "wildcard" } | { kind: "deep" };

/** A variable binding segments [start, end) to a field path; `end` undefined means "to the end". */
export interface TemplateVariable {
  fieldPath: string[];
  start: number;
  end: number | undefined;
}

/** A parsed path template. */
export interface PathTemplate {
  source: string;
  segments: TemplateSegment[];
  variables: TemplateVariable[];
  verb: string | undefined;
}

/** A successful match: the percent-decoded value of each variable. */
export interface TemplateMatch {
  template: PathTemplate;
  values: Array<{ fieldPath: string[]; value: string }>;
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LITERAL = /^[A-Za-z0-9\-._~!$&'()+,;=@%]+$/;

/** Parses a template, throwing an Error that names the template when it is malformed. */
export function parseTemplate(source: string): PathTemplate {
  const fail = (why: string): never => {
    throw new Error(`invalid path template "${source}": ${why}`);
  };
  if (!source.startsWith("/")) fail("must start with /");
  let rest = source.slice(1);
  let verb: string | undefined;
  // The verb is a colon after the last segment, outside any variable braces.
  const lastSlash = rest.lastIndexOf("/");
  const lastClose = rest.lastIndexOf("}");
  const colon = rest.indexOf(":", Math.max(lastSlash, lastClose) + 1);
  if (colon >= 0) {
    verb = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!LITERAL.test(verb)) fail(`invalid verb "${verb}"`);
  }
  const segments: TemplateSegment[] = [];
  const variables: TemplateVariable[] = [];
  const parts = splitOutsideBraces(rest, fail);
  for (const part of parts) {
    if (part.startsWith("{")) {
      if (!part.endsWith("}")) fail(`unterminated variable "${part}"`);
      const inner = part.slice(1, -1);
      const eq = inner.indexOf("=");
      const path = eq < 0 ? inner : inner.slice(0, eq);
      const fieldPath = path.split(".");
      if (!fieldPath.every((p) => IDENT.test(p))) fail(`invalid field path "${path}"`);
      if (variables.some((v) => v.fieldPath.join(".") === path)) fail(`field "${path}" bound twice`);
      const start = segments.length;
      const sub = eq < 0 ? ["*"] : inner.slice(eq + 1).split("/");
      for (const s of sub) {
        if (s.startsWith("{")) fail("nested variables are not allowed");
        segments.push(plainSegment(s, fail));
      }
      variables.push({ fieldPath, start, end: sub.includes("**") ? undefined : segments.length });
    } else {
      segments.push(plainSegment(part, fail));
    }
  }
  const deep = segments.findIndex((s) => s.kind === "deep");
  if (deep >= 0 && deep !== segments.length - 1) fail("** must be the last segment");
  return { source, segments, variables, verb };
}

function splitOutsideBraces(path: string, fail: (why: string) => never): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = "";
  for (const ch of path) {
    if (ch === "{") depth++;
    if (ch === "}") depth--;
    if (depth < 0 || depth > 1) fail("unbalanced braces");
    if (ch === "/" && depth === 0) {
      parts.push(current);
      current = "";
    } else {
      current += ch;
    }
  }
  if (depth !== 0) fail("unbalanced braces");
  parts.push(current);
  return parts;
}

function plainSegment(s: string, fail: (why: string) => never): TemplateSegment {
  if (s === "*") return { kind: "wildcard" };
  if (s === "**") return { kind: "deep" };
  if (!LITERAL.test(s)) fail(`invalid segment "${s}"`);
  return { kind: "literal", value: s };
}

/** Thrown when a path matches but a variable's percent-encoding is malformed. */
export class PathDecodeError extends Error {}

/**
 * Matches a raw request path (no query string, still percent-encoded) against a
 * template; undefined when it does not match.
 */
export function matchTemplate(template: PathTemplate, rawPath: string): TemplateMatch | undefined {
  if (!rawPath.startsWith("/")) return undefined;
  let path = rawPath.slice(1);
  if (template.verb !== undefined) {
    const suffix = `:${template.verb}`;
    if (!path.endsWith(suffix)) return undefined;
    path = path.slice(0, -suffix.length);
  }
  const parts = path.split("/");
  const { segments } = template;
  const deep = segments.at(-1)?.kind === "deep";
  if (deep ? parts.length < segments.length - 1 : parts.length !== segments.length) return undefined;
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    if (seg.kind === "deep") break;
    const part = parts[i]!;
    if (seg.kind === "literal") {
      if (safeDecode(part, false) !== seg.value) return undefined;
    } else if (part === "") {
      return undefined;
    }
  }
  const values = template.variables.map((v) => {
    const span = parts.slice(v.start, v.end);
    // One segment: decode everything. Several: keep %2F so the slashes stay unambiguous.
    const value = span.length === 1 && v.end !== undefined ? decodeOrThrow(span[0]!, false) : span.map((p) => decodeOrThrow(p, true)).join("/");
    return { fieldPath: v.fieldPath, value };
  });
  return { template, values };
}

function decodeSegment(segment: string, keepSlash: boolean): string {
  if (!keepSlash) return decodeURIComponent(segment);
  return segment
    .split(/(%2F)/i)
    .map((piece) => (/^%2F$/i.test(piece) ? piece : decodeURIComponent(piece)))
    .join("");
}

function safeDecode(segment: string, keepSlash: boolean): string | undefined {
  try {
    return decodeSegment(segment, keepSlash);
  } catch {
    return undefined;
  }
}

function decodeOrThrow(segment: string, keepSlash: boolean): string {
  const decoded = safeDecode(segment, keepSlash);
  if (decoded === undefined) throw new PathDecodeError(`malformed percent-encoding in path segment "${segment.slice(0, 64)}"`);
  return decoded;
}

/**
 * Orders matches so the most specific template comes first: a verb beats none,
 * then segment by segment a literal beats `*`, which beats `**`.
 */
export function compareSpecificity(a: PathTemplate, b: PathTemplate): number {
  if ((a.verb === undefined) !== (b.verb === undefined)) return a.verb === undefined ? 1 : -1;
  const rank = (s: TemplateSegment | undefined) => (s === undefined ? 3 : s.kind === "literal" ? 0 : s.kind === "wildcard" ? 1 : 2);
  const n = Math.max(a.segments.length, b.segments.length);
  for (let i = 0; i < n; i++) {
    const diff = rank(a.segments[i]) - rank(b.segments[i]);
    if (diff !== 0) return diff;
  }
  return 0;
}
