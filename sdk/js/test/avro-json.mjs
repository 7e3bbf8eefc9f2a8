// A strict checker of the collector's JSON convention against an Avro schema: every
// field is known, has a compatible JSON type, and every field without a default is
// present. Used to prove that what the SDK emits is what the schemas describe.

const INT = 2 ** 31;

/**
 * Problems with `value` as JSON of Avro `type`; [] when it conforms.
 * @param {any} type @param {any} value @param {string} [path] @param {Map<string, any>} [named]
 * @returns {string[]}
 */
export function check(type, value, path = "$", named = new Map()) {
  if (typeof type === "string") {
    switch (type) {
      case "null":
        return value === null ? [] : [`${path}: expected null`];
      case "boolean":
        return typeof value === "boolean" ? [] : [`${path}: expected a boolean`];
      case "int":
        return Number.isInteger(value) && value >= -INT && value < INT ? [] : [`${path}: expected an int`];
      case "long":
        return Number.isSafeInteger(value) ? [] : [`${path}: expected a long (integer)`];
      case "float":
      case "double":
        return typeof value === "number" && Number.isFinite(value) ? [] : [`${path}: expected a number`];
      case "string":
      case "bytes":
        return typeof value === "string" ? [] : [`${path}: expected a string`];
      default: {
        const def = named.get(type.slice(type.lastIndexOf(".") + 1));
        return def ? check(def, value, path, named) : [`${path}: unknown type ${type}`];
      }
    }
  }
  if (Array.isArray(type)) {
    if (value === null) return type.includes("null") ? [] : [`${path}: null not allowed`];
    for (const branch of type.filter((t) => t !== "null")) {
      if (check(branch, value, path, named).length === 0) return [];
    }
    return [`${path}: matches no branch of ${JSON.stringify(type)}`];
  }
  switch (type.type) {
    case "record": {
      named.set(type.name.slice(type.name.lastIndexOf(".") + 1), type);
      if (typeof value !== "object" || value === null || Array.isArray(value)) return [`${path}: expected an object`];
      const fields = new Set(type.fields.map((/** @type {any} */ f) => f.name));
      const problems = Object.keys(value)
        .filter((k) => !fields.has(k))
        .map((k) => `${path}.${k}: not a field of ${type.name}`);
      for (const f of type.fields) {
        if (!(f.name in value)) {
          if (!("default" in f)) problems.push(`${path}.${f.name}: required (no default) but missing`);
          continue;
        }
        problems.push(...check(f.type, value[f.name], `${path}.${f.name}`, named));
      }
      return problems;
    }
    case "enum":
      named.set(type.name, type);
      return type.symbols.includes(value) ? [] : [`${path}: ${JSON.stringify(value)} is not a ${type.name} symbol`];
    case "array":
      return Array.isArray(value)
        ? value.flatMap((item, i) => check(type.items, item, `${path}[${i}]`, named))
        : [`${path}: expected an array`];
    case "map":
      return typeof value === "object" && value !== null && !Array.isArray(value)
        ? Object.entries(value).flatMap(([k, v]) => check(type.values, v, `${path}.${k}`, named))
        : [`${path}: expected an object (map)`];
    case "fixed":
      return typeof value === "string" ? [] : [`${path}: expected a string`];
    default:
      return check(type.type, value, path, named); // {"type": "long", "logicalType": ...}
  }
}
