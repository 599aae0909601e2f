/** Variables a template may use: a key's flat environment, as VerifyToken returns it. */
export type TemplateEnvironment = Readonly<Record<string, unknown>>;

/** Why a template could not be rendered; names the placeholder at fault. */
export class TemplateError extends Error {
  override name = "TemplateError";
}

const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g;
const VARIABLE = /^environment\.([A-Za-z_][A-Za-z0-9_-]*)$/;

function render(value: unknown, expression: string): string {
  if (typeof value === "string") return value;
  if (typeof value === "boolean" || (typeof value === "number" && Number.isFinite(value))) return String(value);
  throw new TemplateError(`template variable "${expression}" is not a string, number or boolean`);
}

/**
 * Fills `{{ environment.NAME }}` placeholders from a key's environment, e.g.
 * `renderTemplate("Bearer {{ environment.api_key }}", env)`. A missing variable,
 * any other expression or a stray `{{`/`}}` throws a TemplateError: a header
 * silently rendered with an empty secret is worse than no header.
 */
export function renderTemplate(template: string, environment: TemplateEnvironment): string {
  // Checked on the template, not the output: values may legitimately contain braces.
  const stray = /\{\{|\}\}/.exec(template.replace(PLACEHOLDER, ""));
  if (stray !== null) throw new TemplateError(`template has an unmatched "${stray[0]}"`);
  const missing: string[] = [];
  const out = template.replace(PLACEHOLDER, (_match, expression: string) => {
    const variable = VARIABLE.exec(expression);
    if (variable === null) {
      throw new TemplateError(`template placeholder "{{ ${expression} }}" must be "{{ environment.<name> }}"`);
    }
    const name = variable[1]!;
    if (!Object.hasOwn(environment, name)) {
      missing.push(name);
      return "";
    }
    return render(environment[name], expression);
  });
  if (missing.length > 0) {
    throw new TemplateError(
      `template variable${missing.length > 1 ? "s" : ""} ${missing.map((m) => `environment.${m}`).join(", ")} not in the key's environment`,
    );
  }
  return out;
}
