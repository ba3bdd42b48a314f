// A dead letter's payload, pretty-printed when it is JSON. Large ones are folded: only their size shows
// until the operator opens them, and only then are they formatted, so a payload of megabytes does not
// stall the page. Always rendered as text.

/** Above this many characters a payload starts folded. */
export const FOLD_CHARS = 20_000;

export function renderPayload(payload) {
  if (payload === null || payload === undefined) {
    return Object.assign(document.createElement('p'), { className: 'note', textContent: 'No payload (a delete, or input without a body).' });
  }
  if (payload.length <= FOLD_CHARS) return pre(pretty(payload));
  const details = document.createElement('details');
  const summary = document.createElement('summary');
  summary.textContent = `Large payload: ${size(payload.length)}. Show it`;
  details.append(summary);
  details.addEventListener('toggle', () => {
    if (details.open && details.childElementCount === 1) details.append(pre(pretty(payload)));
  }, { once: false });
  return details;
}

/**
 * Two-space JSON, or the text as it came when it is not JSON (which is often why it is here). It indents
 * the text itself rather than re-serializing a parse, which would turn 1.50 into 1.5 and round large
 * numbers: the operator sees the values exactly as they were sent.
 */
export function pretty(text) {
  try {
    JSON.parse(text);
  } catch {
    return text;
  }
  let out = '';
  let depth = 0;
  let inString = false;
  const newline = () => `\n${'  '.repeat(depth)}`;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      out += c;
      if (c === '\\') out += text[++i];
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
      out += c;
    } else if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      const next = nextSignificant(text, i + 1);
      if (text[next] === close) {
        out += c + close;
        i = next;
      } else {
        depth++;
        out += c + newline();
      }
    } else if (c === '}' || c === ']') {
      depth--;
      out += newline() + c;
    } else if (c === ',') out += `,${newline()}`;
    else if (c === ':') out += ': ';
    else if (c !== ' ' && c !== '\n' && c !== '\r' && c !== '\t') out += c;
  }
  return out;
}

function nextSignificant(text, i) {
  while (i < text.length && ' \n\r\t'.includes(text[i])) i++;
  return i;
}

function pre(text) {
  const el = document.createElement('pre');
  el.className = 'payload-text';
  el.tabIndex = 0;
  el.textContent = text;
  return el;
}

function size(chars) {
  return chars >= 1 << 20 ? `${(chars / (1 << 20)).toFixed(1)} M characters` : `${Math.round(chars / 1024)} K characters`;
}
