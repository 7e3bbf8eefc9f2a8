#!/usr/bin/env node
// Generates src/types.ts, the TypeScript types of every event record, from the Avro
// schemas in ../../schemas/<record_type>/v<N>.avsc (the latest version of each type).
//
//   node scripts/gen-types.mjs            rewrite src/types.ts
//   node scripts/gen-types.mjs --check    exit 1 when src/types.ts differs from the schemas
//
// Mapping, which is also the collector's JSON convention: string, bytes, fixed -> string;
// int, long, float, double (timestamp-millis included) -> number; boolean -> boolean;
// enum -> a union of its symbols; array -> T[]; map -> Record<string, T>; a union with
// null -> T | null; a field with a default is optional (absent means its default).
import { readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const SCHEMAS_DIR = join(here, "..", "..", "..", "schemas");
export const TYPES_FILE = join(here, "..", "src", "types.ts");

/** @type {Record<string, string>} */
const PRIMITIVES = {
  null: "null",
  boolean: "boolean",
  int: "number",
  long: "number",
  float: "number",
  double: "number",
  bytes: "string",
  string: "string",
};

/** The latest schema of every record type: [{recordType, version, schema}], sorted by type. */
export function loadLatestSchemas(schemasDir = SCHEMAS_DIR) {
  const out = [];
  for (const entry of readdirSync(schemasDir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const versions = readdirSync(join(schemasDir, entry.name))
      .map((f) => /^v(\d+)\.avsc$/.exec(f)?.[1])
      .filter((v) => v !== undefined)
      .map(Number);
    if (versions.length === 0) continue;
    const version = Math.max(...versions);
    const text = readFileSync(join(schemasDir, entry.name, `v${version}.avsc`), "utf8");
    out.push({ recordType: entry.name, version, schema: JSON.parse(text) });
  }
  return out.sort((a, b) => (a.recordType < b.recordType ? -1 : 1));
}

/** @param {string} name */
const shortName = (name) => name.slice(name.lastIndexOf(".") + 1);

/** @param {unknown} doc @param {string} indent */
function jsdoc(doc, indent) {
  if (!doc) return "";
  const text = String(doc).replace(/\*\//g, "*\\/");
  return `${indent}/** ${text} */\n`;
}

/**
 * Renders TypeScript declarations for every named type reachable from `schemas`.
 * @param {{recordType: string, version: number, schema: any}[]} schemas
 */
export function generate(schemas = loadLatestSchemas()) {
  /** @type {Map<string, {json: string, code: string}>} short name -> definition */
  const named = new Map();
  /** @type {string[]} */
  const order = [];

  /** @param {string} name @param {unknown} definition @param {string} code */
  function define(name, definition, code) {
    const json = JSON.stringify(definition);
    const seen = named.get(name);
    if (seen) {
      if (seen.json !== json) {
        throw new Error(`two different Avro types are named ${name}: rename one in schemas/`);
      }
      return;
    }
    named.set(name, { json, code });
    order.push(name);
  }

  /** @param {any} type @returns {string} */
  function tsType(type) {
    if (typeof type === "string") {
      if (type in PRIMITIVES) return PRIMITIVES[type];
      const name = shortName(type);
      if (!named.has(name)) throw new Error(`unknown Avro type reference ${type}`);
      return name;
    }
    if (Array.isArray(type)) {
      /** @type {string[]} */
      const parts = type.map(tsType);
      const nonNull = parts.filter((p) => p !== "null");
      const hasNull = parts.length !== nonNull.length;
      return [...nonNull, ...(hasNull ? ["null"] : [])].join(" | ");
    }
    switch (type.type) {
      case "record":
        return defineRecord(type);
      case "enum":
        return defineEnum(type);
      case "fixed":
        define(shortName(type.name), type, `export type ${shortName(type.name)} = string;\n`);
        return shortName(type.name);
      case "array": {
        /** @type {string} */
        const item = tsType(type.items);
        return item.includes(" ") ? `Array<${item}>` : `${item}[]`;
      }
      case "map":
        return `Record<string, ${tsType(type.values)}>`;
      default:
        if (type.type in PRIMITIVES) return PRIMITIVES[type.type]; // {"type": "long", "logicalType": ...}
        throw new Error(`unsupported Avro type ${JSON.stringify(type)}`);
    }
  }

  /** @param {any} type @returns {string} */
  function defineEnum(type) {
    const name = shortName(type.name);
    const symbols = JSON.stringify(type.symbols);
    const code =
      `/** The symbols of ${name}, in schema order. */\n` +
      `export const ${name}Symbols = ${symbols} as const;\n` +
      jsdoc(type.doc, "") +
      `export type ${name} = (typeof ${name}Symbols)[number];\n`;
    define(name, type, code);
    return name;
  }

  /** @param {any} type @returns {string} */
  function defineRecord(type) {
    const name = shortName(type.name);
    if (named.has(name)) {
      define(name, type, "");
      return name;
    }
    const lines = [];
    for (const field of type.fields) {
      const ts = tsType(field.type);
      const optional = "default" in field ? "?" : "";
      lines.push(jsdoc(field.doc, "  ") + `  ${field.name}${optional}: ${ts};\n`);
    }
    define(name, type, jsdoc(type.doc, "") + `export interface ${name} {\n${lines.join("")}}\n`);
    return name;
  }

  const roots = schemas.map(({ recordType, version, schema }) => ({
    recordType,
    version,
    name: tsType(schema),
  }));

  const header =
    "// Generated by scripts/gen-types.mjs from schemas/<record_type>/v<N>.avsc: do not edit.\n" +
    "// Run `npm run gen` after a schema change; `npm run check` fails while this file is stale.\n" +
    "// Fields with a default are optional: the collector reads an absent field as its default.\n";
  const body = order.map((n) => named.get(n)?.code ?? "").join("\n");
  const types = roots.map((r) => r.recordType);
  const tail =
    `\n/** Every record type: the schema folder names, which are the collector's event types. */\n` +
    `export const RECORD_TYPES = ${JSON.stringify(types)} as const;\n` +
    `export type RecordType = (typeof RECORD_TYPES)[number];\n\n` +
    `/** The record each event type carries. */\n` +
    `export interface RecordTypeMap {\n${roots.map((r) => `  ${r.recordType}: ${r.name};\n`).join("")}}\n\n` +
    `/** The schema version (v<N>.avsc) these types were generated from. */\n` +
    `export const SCHEMA_VERSIONS: { readonly [K in RecordType]: number } = {\n` +
    roots.map((r) => `  ${r.recordType}: ${r.version},\n`).join("") +
    `};\n`;
  return header + "\n" + body + tail;
}

/** @param {string[]} argv */
function main(argv) {
  const check = argv.includes("--check");
  const text = generate();
  if (check) {
    const current = existsSync(TYPES_FILE) ? readFileSync(TYPES_FILE, "utf8") : "";
    if (current !== text) {
      console.error(
        "src/types.ts is stale: it differs from what schemas/*/v<N>.avsc say. Run `npm run gen` and commit it.",
      );
      process.exit(1);
    }
    console.log("src/types.ts matches the schemas.");
    return;
  }
  writeFileSync(TYPES_FILE, text);
  console.log(`wrote ${TYPES_FILE}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2));
}
