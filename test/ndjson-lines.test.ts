import fc from 'fast-check';
import { Readable } from 'node:stream';
import { createInterface } from 'node:readline';
import { expect, it } from 'vitest';
import { lineChunks, lines } from '../src/events/ndjson-lines.js';

/**
 * The line splitter against node:readline (what every NDJSON reader used before, and what users of
 * line-based tools expect): the same lines for any text, however the bytes are cut into chunks, also
 * inside a multi-byte character or between the `\r` and `\n` of a line end.
 */

const SEED = Number(process.env.FHIR_RTE_PROPERTY_SEED ?? 20_261_130);

async function viaReadline(bytes: Buffer): Promise<string[]> {
  const out: string[] = [];
  for await (const line of createInterface({ input: Readable.from([bytes]), crlfDelay: Infinity })) out.push(line);
  return out;
}

async function viaSplitter(chunks: Buffer[]): Promise<string[]> {
  const out: string[] = [];
  for await (const chunk of lineChunks(Readable.from(chunks))) out.push(...chunk);
  return out;
}

/** `bytes` cut at the given offsets. */
function cut(bytes: Buffer, at: number[]): Buffer[] {
  const points = [...new Set(at.map((a) => a % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    chunks.push(bytes.subarray(from, p));
    from = p;
  }
  chunks.push(bytes.subarray(from));
  return chunks.filter((c) => c.length > 0);
}

// Texts made of JSON-ish words, every kind of line end, and characters of one to four UTF-8 bytes.
const piece = fc.constantFrom('{"a":1}', 'x', ' ', '\n', '\r\n', '\r', '\r\r\n', 'é', '€', '𝄞', '"\\n"', '');
const text = fc.array(piece, { maxLength: 40 }).map((p) => p.join(''));

it('gives the lines readline gives, however the input is chunked', async () => {
  await fc.assert(
    fc.asyncProperty(text, fc.array(fc.nat(), { maxLength: 8 }), async (t, at) => {
      const bytes = Buffer.from(t, 'utf8');
      expect(await viaSplitter(cut(bytes, at))).toEqual(await viaReadline(bytes));
    }),
    { seed: SEED, numRuns: 500 },
  );
});

it('yields each chunk\'s complete lines together, and the last line without an end', async () => {
  const chunks: string[][] = [];
  for await (const c of lineChunks(Readable.from([Buffer.from('a\nb\nc'), Buffer.from('d\ne')]))) chunks.push(c);
  expect(chunks).toEqual([['a', 'b'], ['cd'], ['e']]);
  const all: string[] = [];
  for await (const l of lines(Readable.from(['x\r\ny']))) all.push(l);
  expect(all).toEqual(['x', 'y']);
});
