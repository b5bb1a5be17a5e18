// The curl command that sends the same request as the page. The key is left as the
// $BATCHVISION_API_KEY variable (the one the CLI reads) so a copied command never carries the
// secret into a terminal's history or a chat.

export function shellQuote(text) {
  return `'${String(text).replace(/'/g, "'\\''")}'`;
}

// curl's -F reads `;` and `,` in a file name as its own syntax unless the name is quoted.
function formFile(field, name) {
  const safe = /^[^;,"\\]+$/.test(name) ? name : `"${name.replace(/["\\]/g, "\\$&")}"`;
  return `-F ${shellQuote(`${field}=@${safe}`)}`;
}

export function analyzeCurl({ base, files, tasks, fps, withKey }) {
  const parts = [`curl -s ${shellQuote(`${base}v1/analyze`)}`];
  if (withKey) parts.push(`-H "Authorization: Bearer $BATCHVISION_API_KEY"`);
  for (const file of files) {
    parts.push(formFile(file.type.startsWith("video/") ? "videos" : "images", file.name));
  }
  parts.push(`-F ${shellQuote(`tasks=${JSON.stringify(tasks)}`)}`);
  if (fps !== null && files.some((file) => file.type.startsWith("video/"))) {
    parts.push(`-F ${shellQuote(`fps=${fps}`)}`);
  }
  return parts.join(" \\\n     ");
}
