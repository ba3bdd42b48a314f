import { createReadStream, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { arrivalNow, type ChangeEvent } from '../../events/change-event.js';
import { eventsFromJson, eventsFromText, unreadable, type ReadsResource } from '../../events/from-fhir.js';
import { parseFhirJson } from '../../events/fhir-json.js';
import { lineChunks } from '../../events/ndjson-lines.js';
import type { ApplyBatch, Source } from '../source.js';

const LOADABLE = /\.(ndjson|ndjson\.gz|jsonl|json)$/i;

/**
 * A batch also ends at this much input text. What a batch holds in memory (the parsed resources, their
 * text, the sink's parameters) grows with its text, not its count: 1,000 Synthea DocumentReferences
 * (3 KB each) hold four times what 1,000 Observations do, and alone set the peak RSS of a whole load.
 */
export const BATCH_CHARS = 1 << 20;

/** Bytes read (and unzipped) at a time: fewer, larger reads than the streams' 64 KiB cost less per line. */
const CHUNK_BYTES = 256 << 10;

export interface FileSourceOptions {
  /** A batch ends at this many events (default 1,000) or at batchChars of text (default BATCH_CHARS). */
  batchSize?: number;
  batchChars?: number;
  /** Batches applied at once (default 3); the sink keeps each resource's changes in order across them. */
  inFlight?: number;
  /** The types the sink reads parsed; a line of another type keeps only its text (see eventsFromText). */
  reads?: ReadsResource;
}

/**
 * Backfill from files: NDJSON (one resource per line), `.ndjson.gz`, and `.json` files holding a resource,
 * a Bundle or an array of resources. Directories are read recursively in name order. Every line (and entry)
 * keeps its file and line number as origin, so a dead letter points at the exact input, and the time it was
 * read as its arrival (the clock that orders events without a version or time). Batches are applied while
 * the next ones are read.
 */
export class FileSource implements Source {
  private readonly batchSize: number;
  private readonly inFlight: number;
  private readonly batchChars: number;
  private readonly reads?: ReadsResource;

  constructor(
    private readonly paths: string[],
    options: FileSourceOptions = {},
  ) {
    this.batchSize = options.batchSize ?? 1000;
    this.inFlight = options.inFlight ?? 3;
    this.batchChars = options.batchChars ?? BATCH_CHARS;
    this.reads = options.reads;
  }

  /** The files a run will read; throws for a path that does not exist. */
  files(): string[] {
    return this.paths.flatMap(expand);
  }

  async run(apply: ApplyBatch, signal: AbortSignal): Promise<void> {
    const pending = new Set<Promise<unknown>>();
    let failure: unknown;
    let batch: ChangeEvent[] = [];
    let chars = 0;
    const flush = async () => {
      while (pending.size >= this.inFlight) await Promise.race(pending);
      if (failure) throw failure;
      const p: Promise<unknown> = apply(batch).then(
        () => pending.delete(p),
        (err: unknown) => {
          failure ??= err;
          pending.delete(p);
        },
      );
      pending.add(p);
      batch = [];
      chars = 0;
    };
    for (const file of this.files()) {
      reading: for await (const lines of read(file, this.reads)) {
        for (const { events, length } of lines) {
          if (signal.aborted) break reading;
          for (const e of events) batch.push(e); // not push(...events): a Bundle may hold more entries than a call takes arguments
          chars += length;
          if (batch.length >= this.batchSize || chars >= this.batchChars) await flush();
        }
      }
    }
    if (batch.length && !signal.aborted) await flush();
    await Promise.all(pending);
    if (failure) throw failure;
  }
}

function expand(path: string): string[] {
  const stat = statSync(path, { throwIfNoEntry: false });
  if (!stat) throw new Error(`${path}: no such file or directory`);
  if (!stat.isDirectory()) return [path];
  return readdirSync(path, { recursive: true, encoding: 'utf8' })
    .filter((f) => LOADABLE.test(f))
    .sort()
    .map((f) => join(path, f))
    .filter((f) => statSync(f).isFile());
}

/** The events a line (or a whole .json file) made, with the length of its text. */
interface Read {
  events: ChangeEvent[];
  length: number;
}

/** A file's events, as they are read, a chunk of lines at a time. */
async function* read(file: string, reads?: ReadsResource): AsyncGenerator<Read[]> {
  if (/\.json$/i.test(file)) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      yield [{ events: [unreadable('', { kind: 'file', file, line: 1 }, arrivalNow(), 'UnreadableFile', `cannot read ${file}: ${(err as Error).message}`)], length: 0 }];
      return;
    }
    // Held whole while it is read anyway: its batches end by count.
    for (const events of jsonFileEvents(withoutBom(text), file)) yield [{ events, length: 0 }];
    return;
  }
  const raw = createReadStream(file, { highWaterMark: CHUNK_BYTES });
  const input = /\.gz$/i.test(file) ? raw.pipe(createGunzip({ chunkSize: CHUNK_BYTES })) : raw;
  let line = 0;
  try {
    for await (const texts of lineChunks(input)) {
      const read: Read[] = [];
      for (const text of texts) {
        line++;
        if (text.trim() === '') continue;
        read.push({ events: eventsFromText(line === 1 ? withoutBom(text) : text, { kind: 'file', file, line }, arrivalNow(), reads), length: text.length });
      }
      yield read;
    }
  } catch (err) {
    // A corrupt or truncated file: what was read counts, the rest is one dead letter that says why.
    const message = `cannot read ${file} after line ${line}: ${(err as Error).message}`;
    yield [{ events: [unreadable('', { kind: 'file', file, line: line + 1 }, arrivalNow(), 'UnreadableFile', message)], length: 0 }];
  } finally {
    raw.destroy();
  }
}

/**
 * A `.json` file holds a resource, a Bundle, or a JSON array of resources (as some tools export them):
 * an array's elements are read one by one, each with its index as the origin's entry, so one bad element
 * is one dead letter and the rest apply.
 */
function* jsonFileEvents(text: string, file: string): Generator<ChangeEvent[]> {
  let value: unknown;
  try {
    value = text.trimStart().startsWith('[') ? parseFhirJson(text) : undefined;
  } catch {
    value = undefined; // eventsFromText reports the syntax error
  }
  if (!Array.isArray(value)) {
    yield eventsFromText(text, { kind: 'file', file, line: 1 }, arrivalNow());
    return;
  }
  const arrival = arrivalNow();
  for (let start = 0; start < value.length; start += 1000) {
    yield value.slice(start, start + 1000).flatMap((item: unknown, i) => eventsFromJson(item, { kind: 'file', file, line: 1, entry: start + i }, arrival));
  }
}

/** Editors on some systems start UTF-8 files with a byte-order mark, which a JSON parser refuses. */
function withoutBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}
