// The API reference page: fetches /openapi.json from this node and renders its operations,
// grouped by tag, and its schemas. Plain DOM building (no innerHTML of document text), so a
// description can never become markup; the Content-Security-Policy forbids everything else.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function schemaName(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array" && schema.items) return schemaName(schema.items) + "[]";
  if (schema.properties && schema.properties.items) return "page of " + schemaName(schema.properties.items);
  return Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "any";
}

function schemaLink(schema) {
  const name = schemaName(schema);
  const target = schema && (schema.$ref || (schema.items && schema.items.$ref) ||
    (schema.properties && schema.properties.items && schema.properties.items.items && schema.properties.items.items.$ref));
  return target ? el("a", { href: "#schema-" + target.split("/").pop() }, name) : el("code", {}, name);
}

function operationView(path, method, op) {
  const section = el("section", { id: op.operationId });
  section.append(el("h2", {}, el("span", { class: "status" }, method.toUpperCase()), " ", el("code", {}, path), " ", op.summary || ""));
  if (op.description) section.append(el("p", {}, op.description));
  if (op.security) section.append(el("p", {}, "Needs a bearer token."));
  if (op.parameters && op.parameters.length) {
    const rows = op.parameters.map((p) => el("tr", {},
      el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, p.required ? "required" : "optional"),
      el("td", {}, schemaName(p.schema)), el("td", {}, p.description || "")));
    section.append(el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, ""),
      el("th", {}, "type"), el("th", {}, "")), ...rows));
  }
  if (op.requestBody) {
    const [type, media] = Object.entries(op.requestBody.content)[0];
    section.append(el("p", {}, "Body (" + type + (op.requestBody.required ? "" : ", optional") + "): ", schemaLink(media.schema),
      op.requestBody.description ? " " + op.requestBody.description : ""));
  }
  const rows = Object.entries(op.responses).map(([status, response]) => {
    const media = response.content && Object.values(response.content)[0];
    return el("tr", {}, el("td", {}, el("span", { class: "status" }, status)), el("td", {}, response.description),
      el("td", {}, media && media.schema ? schemaLink(media.schema) : ""));
  });
  section.append(el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "when"), el("th", {}, "body")), ...rows));
  return section;
}

function schemaView(name, schema) {
  const section = el("section", { id: "schema-" + name }, el("h2", {}, name));
  if (schema.description) section.append(el("p", {}, schema.description));
  if (schema.enum) section.append(el("p", {}, "One of: ", ...schema.enum.map((v, i) => el("code", {}, (i ? ", " : "") + v))));
  const variants = schema.oneOf || schema.anyOf;
  if (variants) {
    section.append(el("p", {}, "One of:"));
    for (const variant of variants) section.append(schemaView(variant.title || schemaName(variant), variant));
  }
  if (schema.properties) {
    const required = new Set(schema.required || []);
    const rows = Object.entries(schema.properties).map(([field, inner]) => el("tr", {},
      el("td", {}, el("code", {}, field)), el("td", {}, required.has(field) ? "required" : "optional"),
      el("td", {}, schemaLink(inner)), el("td", {}, inner.description || (inner.enum ? inner.enum.join(", ") : ""))));
    section.append(el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, ""), el("th", {}, "type"), el("th", {}, "")), ...rows));
  }
  return section;
}

async function render() {
  const view = document.getElementById("view");
  const answer = await fetch("/openapi.json", { headers: { accept: "application/json" } });
  if (!answer.ok) throw new Error("GET /openapi.json answered " + answer.status);
  const spec = await answer.json();
  const nav = document.getElementById("nav");
  view.replaceChildren(el("section", {}, el("h2", {}, spec.info.title + " " + spec.info.version), el("p", {}, spec.info.description || "")));
  for (const tag of spec.tags || []) {
    nav.append(el("a", { href: "#tag-" + tag.name }, tag.name));
    view.append(el("h2", { id: "tag-" + tag.name }, tag.name));
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(item)) {
        if ((op.tags || []).includes(tag.name)) view.append(operationView(path, method, op));
      }
    }
  }
  nav.append(el("a", { href: "#schemas" }, "schemas"));
  view.append(el("h2", { id: "schemas" }, "schemas"));
  for (const [name, schema] of Object.entries(spec.components.schemas)) view.append(schemaView(name, schema));
}

render().catch((e) => {
  const box = document.getElementById("error");
  box.textContent = "Could not show the reference: " + e.message;
  box.hidden = false;
});
