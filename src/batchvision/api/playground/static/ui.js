// Small DOM helpers shared by the pages.

export const $ = (selector, root = document) => root.querySelector(selector);

// An element with attributes and children (strings become text).
export function make(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

// One status line for the whole page: what just happened, or what went wrong.
export function say(message, kind = "info") {
  const line = $("#status");
  line.textContent = message;
  line.dataset.kind = kind;
  line.setAttribute("role", kind === "error" ? "alert" : "status");
  line.hidden = false;
}
