// A skill's parameter form, generated from the JSON schema `GET /v1/skills` gives (pydantic's):
// one input per property, prefilled with its default. Only values that differ from the default
// are sent, so the request (and its curl) names just what the user changed.

function resolve(schema, root) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return resolve((root.$defs || {})[name] || {}, root);
  }
  if (schema && schema.allOf && schema.allOf.length === 1) {
    return { ...resolve(schema.allOf[0], root), ...schema, allOf: undefined };
  }
  return schema || {};
}

// {kind, nullable, schema}: what input a property gets.
export function fieldKind(property, root) {
  let schema = resolve(property, root);
  let nullable = false;
  if (schema.anyOf) {
    const options = schema.anyOf.map((option) => resolve(option, root));
    const real = options.filter((option) => option.type !== "null");
    nullable = real.length < options.length;
    if (real.length !== 1) {
      return { kind: "json", nullable, schema };
    }
    schema = { ...real[0], description: property.description, default: property.default };
  }
  if (schema.enum) return { kind: "enum", nullable, schema };
  if (schema.type === "boolean") return { kind: "boolean", nullable, schema };
  if (schema.type === "integer" || schema.type === "number") return { kind: "number", nullable, schema };
  if (schema.type === "string") return { kind: "string", nullable, schema };
  if (schema.type === "array" && resolve(schema.items, root).type === "string") {
    return { kind: "list", nullable, schema };
  }
  return { kind: "json", nullable, schema };
}

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  if (text) node.textContent = text;
  return node;
}

function input(name, field, defaultValue) {
  const { kind, schema } = field;
  if (kind === "boolean") {
    const box = element("input", { type: "checkbox", name });
    box.checked = Boolean(defaultValue);
    return box;
  }
  if (kind === "enum") {
    const select = element("select", { name });
    if (field.nullable) select.append(element("option", { value: "" }, "(default)"));
    for (const option of schema.enum) select.append(element("option", { value: option }, String(option)));
    select.value = defaultValue ?? "";
    return select;
  }
  if (kind === "number") {
    const step = schema.type === "integer" ? "1" : "any";
    const number = element("input", { type: "number", name, step, min: schema.minimum, max: schema.maximum });
    number.value = defaultValue ?? "";
    return number;
  }
  const text = element("input", { type: "text", name, spellcheck: "false" });
  if (kind === "list") {
    text.placeholder = "comma-separated";
    text.value = (defaultValue || []).join(", ");
  } else if (kind === "json") {
    text.placeholder = "JSON";
    text.value = defaultValue === null || defaultValue === undefined ? "" : JSON.stringify(defaultValue);
  } else {
    text.value = defaultValue ?? "";
  }
  return text;
}

function readValue(control, field) {
  if (field.kind === "boolean") return control.checked;
  const raw = control.value.trim();
  if (raw === "") return null;
  if (field.kind === "number") return Number(raw);
  if (field.kind === "list") return raw.split(",").map((part) => part.trim()).filter(Boolean);
  if (field.kind === "json") {
    try {
      return JSON.parse(raw);
    } catch {
      return raw; // the server says what is wrong with it
    }
  }
  return raw;
}

function writeValue(control, field, value) {
  if (field.kind === "boolean") control.checked = Boolean(value);
  else if (field.kind === "list") control.value = Array.isArray(value) ? value.join(", ") : "";
  else if (field.kind === "json") control.value = value === null || value === undefined ? "" : JSON.stringify(value);
  else control.value = value ?? "";
}

export class ParamsForm {
  constructor(form) {
    this.form = form;
    this.fields = {};
    this.extra = {}; // keys the JSON editor set that the schema does not have: the server judges
  }

  show(skill) {
    this.form.replaceChildren();
    this.fields = {};
    this.extra = {};
    const schema = skill.params || {};
    for (const [name, property] of Object.entries(schema.properties || {})) {
      const field = fieldKind(property, schema);
      const control = input(name, field, property.default);
      control.id = `param-${name}`;
      const label = element("label", { for: control.id }, property.title || name);
      const help = element("small", { class: "muted" }, property.description || "");
      const row = element("div", { class: "param" });
      row.append(label, control, help);
      this.form.append(row);
      this.fields[name] = { ...field, control, default: property.default };
    }
  }

  values() {
    const params = {};
    for (const [name, field] of Object.entries(this.fields)) {
      const value = readValue(field.control, field);
      const unchanged = JSON.stringify(value) === JSON.stringify(field.default ?? null);
      const cleared = value === null && !field.nullable; // an emptied box means the default
      if (!unchanged && !cleared) params[name] = value;
    }
    return { ...params, ...this.extra };
  }

  // The whole parameter object, defaults included, for the JSON editor.
  complete() {
    const params = {};
    for (const [name, field] of Object.entries(this.fields)) {
      params[name] = readValue(field.control, field);
    }
    return { ...params, ...this.extra };
  }

  apply(params) {
    this.extra = {};
    for (const [name, field] of Object.entries(this.fields)) {
      writeValue(field.control, field, name in params ? params[name] : field.default);
    }
    for (const [name, value] of Object.entries(params)) {
      if (!(name in this.fields)) this.extra[name] = value;
    }
  }
}
