// Building the page: elements from the API's data, made as text (textContent,
// attribute values), never as markup. The content security policy forbids
// inline script anyway, and a service's names or a guest's output must not
// become part of the page.

export const SVG = "http://www.w3.org/2000/svg";

/** An element with attributes and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child !== undefined && child !== null) node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** The child of `parent` matching `selector`, made by `make` if missing. */
export function keep(parent, selector, make) {
  let node = parent.querySelector(`:scope > ${selector}`);
  if (!node) {
    node = make();
    parent.append(node);
  }
  return node;
}

/** A count or size for people: 1.2k, 3.4M. */
export function human(n) {
  if (typeof n !== "number") return "—";
  const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [size, unit] of units) if (n >= size) return `${(n / size).toFixed(1)}${unit}`;
  return String(n);
}

export const share = (ppm) => (typeof ppm === "number" ? `${(ppm / 10000).toFixed(1)}%` : "—");
export const clock = (ms) => new Date(ms).toLocaleTimeString();
