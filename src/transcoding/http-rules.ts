import type { DescField, DescMessage, DescMethod, DescService } from "@bufbuild/protobuf";
import { getOption, hasOption } from "@bufbuild/protobuf";
import { http } from "../gen/google/api/annotations_pb.js";
import type { HttpRule } from "../gen/google/api/http_pb.js";
import { type PathTemplate, parseTemplate } from "./path-template.js";

/** One REST binding of a unary RPC, from its `google.api.http` option. */
export interface HttpRoute {
  method: DescMethod;
  httpMethod: string;
  template: PathTemplate;
  /** The top-level field carrying the request body: undefined for none, "*" for the whole message. */
  body: DescField | "*" | undefined;
  /** The response field sent as the body, or undefined for the whole message. */
  responseBody: DescField | undefined;
}

/**
 * Every REST route the services declare, additional_bindings included. Throws when
 * a rule is invalid (bad template, unknown field, streaming method), so a broken
 * contract fails at start-up rather than on a request.
 */
export function httpRoutes(services: readonly DescService[]): HttpRoute[] {
  const routes: HttpRoute[] = [];
  for (const service of services) {
    for (const method of service.methods) {
      if (!hasOption(method, http)) continue;
      const rule = getOption(method, http);
      for (const r of [rule, ...rule.additionalBindings]) routes.push(toRoute(method, r));
    }
  }
  return routes;
}

function toRoute(method: DescMethod, rule: HttpRule): HttpRoute {
  const where = `${method.parent.typeName}.${method.name}`;
  if (method.methodKind !== "unary") throw new Error(`${where}: google.api.http on a streaming method is not supported`);
  const { pattern } = rule;
  if (pattern.case === undefined) throw new Error(`${where}: google.api.http has no pattern`);
  const [httpMethod, path] = pattern.case === "custom" ? [pattern.value.kind, pattern.value.path] : [pattern.case.toUpperCase(), pattern.value];
  const template = parseTemplate(path);
  for (const v of template.variables) {
    const fields = resolveFieldPath(method.input, v.fieldPath, where);
    const leaf = fields.at(-1)!;
    if (leaf.fieldKind !== "scalar" && leaf.fieldKind !== "enum") {
      throw new Error(`${where}: path variable ${v.fieldPath.join(".")} must be a singular scalar field`);
    }
  }
  let body: HttpRoute["body"];
  if (rule.body === "*") body = "*";
  else if (rule.body !== "") body = resolveFieldPath(method.input, [rule.body], where)[0];
  let responseBody: DescField | undefined;
  if (rule.responseBody !== "") responseBody = resolveFieldPath(method.output, [rule.responseBody], where)[0];
  return { method, httpMethod: httpMethod.toUpperCase(), template, body, responseBody };
}

/** Resolves a dotted proto field path through singular message fields. */
function resolveFieldPath(message: DescMessage, path: string[], where: string): DescField[] {
  const fields: DescField[] = [];
  let current: DescMessage | undefined = message;
  for (const name of path) {
    const field: DescField | undefined = current?.fields.find((f) => f.name === name);
    if (field === undefined) throw new Error(`${where}: ${message.typeName} has no field ${path.join(".")}`);
    fields.push(field);
    current = field.fieldKind === "message" ? field.message : undefined;
  }
  return fields;
}
