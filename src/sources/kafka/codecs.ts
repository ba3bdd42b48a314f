// kafkajs is CommonJS: Node's ESM loader cannot see these as named exports (tsx and vitest can, which hid it).
import kafkajs from 'kafkajs';

const { CompressionCodecs, CompressionTypes } = kafkajs;
import SnappyCodec from 'kafkajs-snappy';
import * as lz4 from 'lz4js';
import { decompress as zstdDecompress } from 'fzstd';

/**
 * kafkajs reads gzip on its own but throws on snappy, lz4 and zstd record batches, which Java producers
 * (and brokers with a topic-level `compression.type`) commonly write: the consumer would crash on every
 * fetch of such a topic. These codecs, all pure JavaScript (no native build), let it read all four.
 * fhir-rte only consumes, so lz4 and zstd implement decompression alone; snappy comes whole from
 * kafkajs-snappy (with the xerial framing Java's snappy-java writes).
 */
interface Codec {
  compress(encoder: { buffer: Buffer }): Promise<Buffer>;
  decompress(buffer: Buffer): Promise<Buffer>;
}

const lz4Codec = (): Codec => ({
  async compress(encoder) {
    return Buffer.from(lz4.compress(encoder.buffer));
  },
  async decompress(buffer) {
    // Kafka writes LZ4 frames (magic 0x184D2204) since message format v1.
    return Buffer.from(lz4.decompress(buffer));
  },
});

const zstdCodec = (): Codec => ({
  async compress() {
    throw new Error('fhir-rte does not produce zstd-compressed records');
  },
  async decompress(buffer) {
    return Buffer.from(zstdDecompress(buffer));
  },
});

let registered = false;

/** Registers the codecs in kafkajs's process-wide table (idempotent). */
export function registerCompressionCodecs(): void {
  if (registered) return;
  registered = true;
  const codecs = CompressionCodecs as unknown as Record<number, () => Codec>;
  codecs[CompressionTypes.Snappy] = SnappyCodec as () => Codec;
  codecs[CompressionTypes.LZ4] = lz4Codec;
  codecs[CompressionTypes.ZSTD] = zstdCodec;
}
