import { describe, expect, it } from "vitest";
import { renderTemplate, TemplateError } from "@apikeys/client";

describe("renderTemplate", () => {
  const env = { api_key: "s3cr3t", port: 8443, tls: true, "with-dash": "d" };

  it("fills environment variables, with or without spaces inside the braces", () => {
    expect(renderTemplate("Bearer {{ environment.api_key }}", env)).toBe("Bearer s3cr3t");
    expect(renderTemplate("https://host:{{environment.port}}/?tls={{  environment.tls  }}", env)).toBe("https://host:8443/?tls=true");
    expect(renderTemplate("{{ environment.with-dash }}{{ environment.api_key }}", env)).toBe("ds3cr3t");
    expect(renderTemplate("no placeholders", {})).toBe("no placeholders");
  });

  it("keeps braces that come from values", () => {
    expect(renderTemplate("x={{ environment.v }}", { v: "{{ environment.api_key }}" })).toBe("x={{ environment.api_key }}");
  });

  it("throws, naming every missing variable, instead of rendering an empty string", () => {
    expect(() => renderTemplate("Bearer {{ environment.token }}", env)).toThrow(TemplateError);
    expect(() => renderTemplate("{{ environment.a }} {{ environment.b }}", env)).toThrow(
      "template variables environment.a, environment.b not in the key's environment",
    );
    // Inherited properties are not variables.
    expect(() => renderTemplate("{{ environment.toString }}", env)).toThrow(/environment.toString not in/);
  });

  it("refuses other expressions and unmatched braces", () => {
    expect(() => renderTemplate("{{ api_key }}", env)).toThrow('must be "{{ environment.<name> }}"');
    expect(() => renderTemplate("{{ environment.a.b }}", env)).toThrow(TemplateError);
    expect(() => renderTemplate("Bearer {{ environment.api_key", env)).toThrow('unmatched "{{"');
    expect(() => renderTemplate("Bearer environment.api_key }}", env)).toThrow('unmatched "}}"');
  });

  it("refuses values that are not strings, numbers or booleans", () => {
    expect(() => renderTemplate("{{ environment.o }}", { o: { nested: 1 } })).toThrow(/not a string, number or boolean/);
    expect(() => renderTemplate("{{ environment.n }}", { n: null })).toThrow(TemplateError);
  });
});
