import { type DescField, type DescMessage, type JsonObject, type JsonValue, type Message, ScalarType, create, mergeFromJson } from "@bufbuild/protobuf";
import { invalidArgument } from "../errors.js";
import { STRICT_JSON_OPTIONS } from "../http/strict-json.js";
import type { HttpRoute } from "./http-rules.js";
import type { TemplateMatch } from "./path-template.js";

/** Well-known messages whose JSON form is a string, so a query parameter can carry them. */
const STRING_JSON_MESSAGES = new Set(["google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.FieldMask"]);

/** Wrapper messages, whose JSON form is that of their `value` field. */
const WRAPPERS = new Set(
  ["Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes"].map((t) => `google.protobuf.${t}Value`),
);


/**
 * Builds the request message of `route` from the path variables, the query string
 * and the JSON body, following google.api.HttpRule. Every problem is an
 * invalid_argument that names the offending parameter or field.
 */
export function buildRequestMessage(
  route: HttpRoute,
  match: TemplateMatch,
  query: URLSearchParams,
  body: JsonValue | undefined,
): Message {
  const schema = route.method.input;
  const message = create(schema);
  if (route.body === "*") {
    merge(schema, message, body ?? {}, "request body", undefined);
  } else if (route.body !== undefined && body !== undefined) {
    merge(schema, message, { [route.body.jsonName]: body }, "request body", undefined);
  }

  const bound = new Map<string, string>();
  for (const v of match.values) bound.set(v.fieldPath.join("."), "the URL path");
  if (route.body !== undefined && route.body !== "*") bound.set(route.body.name, "the request body");

  const params = new Map<string, { name: string; fields: DescField[]; values: string[] }>();
  for (const name of new Set(query.keys())) {
    if (route.body === "*") {
      throw invalidArgument(`query parameter "${name}" is not allowed: the request body carries every field`, name);
    }
    const fields = resolveQueryName(schema, name);
    const canonical = fields.map((f) => f.name).join(".");
    for (const [path, where] of bound) {
      if (canonical === path || canonical.startsWith(`${path}.`)) {
        throw invalidArgument(`query parameter "${name}" sets a field bound by ${where}`, name);
      }
    }
    const entry = params.get(canonical) ?? { name, fields, values: [] };
    entry.values.push(...query.getAll(name));
    params.set(canonical, entry);
  }
  for (const { name, fields, values } of params.values()) {
    const leaf = fields.at(-1)!;
    if (leaf.fieldKind !== "list" && values.length > 1) {
      throw invalidArgument(`query parameter "${name}" is given ${values.length} times but is not repeated`, name);
    }
    const converted = values.map((v) => toJsonValue(leaf, v, `query parameter "${name}"`));
    const json = nest(fields, leaf.fieldKind === "list" ? converted : converted[0]!);
    merge(schema, message, json, `query parameter "${name}"`, name);
  }

  // Path variables go last, so they win over a body that sets the same field.
  for (const v of match.values) {
    const fields = resolveFieldNames(schema, v.fieldPath);
    const what = `path variable "${v.fieldPath.join(".")}"`;
    merge(schema, message, nest(fields, toJsonValue(fields.at(-1)!, v.value, what)), what, v.fieldPath.join("."));
  }
  return message;
}

/** Merges JSON into the message; a value the decoder refuses is blamed on `field` when the decoder names none. */
function merge(schema: DescMessage, message: Message, json: JsonValue, what: string, field: string | undefined) {
  try {
    mergeFromJson(schema, message, json, STRICT_JSON_OPTIONS);
  } catch (err) {
    const text = `invalid ${what}: ${(err as Error).message}`;
    const error = invalidArgument(text);
    throw field !== undefined && error.reason === "MALFORMED_REQUEST" ? invalidArgument(text, field) : error;
  }
}

/** Resolves a dotted query name, each part by proto or JSON name, through singular messages. */
function resolveQueryName(schema: DescMessage, name: string): DescField[] {
  const fields: DescField[] = [];
  let current: DescMessage | undefined = schema;
  for (const part of name.split(".")) {
    const field: DescField | undefined = current?.fields.find((f) => f.name === part || f.jsonName === part);
    if (field === undefined) throw invalidArgument(`unknown query parameter "${name}"`);
    fields.push(field);
    current = field.fieldKind === "message" && !isPrimitiveJsonMessage(field.message) ? field.message : undefined;
  }
  const leaf = fields.at(-1)!;
  const settable =
    leaf.fieldKind === "scalar" ||
    leaf.fieldKind === "enum" ||
    (leaf.fieldKind === "list" && leaf.listKind !== "message") ||
    (leaf.fieldKind === "message" && isPrimitiveJsonMessage(leaf.message));
  if (!settable) {
    throw invalidArgument(`query parameter "${name}" names a ${leaf.fieldKind} field; only scalar fields can be set from the query`, name);
  }
  return fields;
}

function resolveFieldNames(schema: DescMessage, path: string[]): DescField[] {
  const fields: DescField[] = [];
  let current: DescMessage | undefined = schema;
  for (const part of path) {
    const field: DescField = current!.fields.find((f) => f.name === part)!;
    fields.push(field);
    current = field.fieldKind === "message" ? field.message : undefined;
  }
  return fields;
}

/** Whether a message's proto3 JSON is a string or scalar, so one query parameter can set it. */
export function isPrimitiveJsonMessage(message: DescMessage): boolean {
  return STRING_JSON_MESSAGES.has(message.typeName) || WRAPPERS.has(message.typeName);
}

/** `{a: {b: value}}` for fields [a, b], keyed by JSON name. */
function nest(fields: DescField[], value: JsonValue): JsonObject {
  let json: JsonValue = value;
  for (let i = fields.length - 1; i >= 0; i--) json = { [fields[i]!.jsonName]: json };
  return json as JsonObject;
}

/** Turns one text value into the proto3 JSON value for the field's element type. */
function toJsonValue(field: DescField, text: string, what: string): JsonValue {
  let scalar: ScalarType | undefined;
  let isEnum = false;
  switch (field.fieldKind) {
    case "scalar":
      scalar = field.scalar;
      break;
    case "enum":
      isEnum = true;
      break;
    case "list":
      if (field.listKind === "scalar") scalar = field.scalar;
      else isEnum = field.listKind === "enum";
      break;
    case "message":
      if (WRAPPERS.has(field.message.typeName)) {
        const inner = field.message.fields[0]!;
        if (inner.fieldKind === "scalar") scalar = inner.scalar;
      }
      break;
  }
  if (isEnum) return /^-?\d+$/.test(text) ? Number(text) : text;
  if (scalar === ScalarType.BOOL) {
    if (text === "true" || text === "1") return true;
    if (text === "false" || text === "0") return false;
    throw invalidArgument(`invalid ${what}: expected true or false, got "${text.slice(0, 64)}"`, field.name);
  }
  // proto3 JSON accepts numbers, 64-bit integers and bytes (base64) as strings.
  return text;
}
