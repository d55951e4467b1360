/**
 * The one place that hides secrets in text. The token must never appear in a log line, an error
 * message or a problem list: every such text passes through a scrubber made here.
 */

export const REDACTED = '[REDACTED]';

/** Shorter "secrets" are not scrubbed: replacing them would mangle ordinary text and hide nothing. */
export const MIN_SECRET_LENGTH = 4;

/**
 * Returns a function that replaces every occurrence of each secret with "[REDACTED]": as written,
 * JSON-escaped (inside a log line) and URI-encoded (inside a URL or a server's echo of one).
 */
export function makeScrubber(secrets: readonly string[]): (text: string) => string {
  const needles = new Set<string>();
  for (const s of secrets) {
    if (typeof s !== 'string' || s.length < MIN_SECRET_LENGTH) continue;
    needles.add(s);
    needles.add(JSON.stringify(s).slice(1, -1));
    needles.add(encodeURIComponent(s));
  }
  // Longest first, so that a secret containing another is replaced whole.
  const list = [...needles].sort((a, b) => b.length - a.length);
  if (list.length === 0) return (text) => text;
  return (text) => {
    let out = text;
    for (const n of list) if (out.includes(n)) out = out.split(n).join(REDACTED);
    return out;
  };
}
