import type { UserInvocationTable } from 'fhirpath';
import { isResourceNode as isNode, nodeWrittenText } from './resource-node.js';

/**
 * lowBoundary([precision]) and highBoundary([precision]) after the FHIRPath specification, replacing
 * fhirpath.js's own for two reasons: a decimal's precision is the one it was written with (see
 * events/fhir-json.ts), and a dateTime without a zone spans every zone, so its boundaries carry +14:00 and
 * -12:00. They run on fhirpath.js (internal structures, to see element types and the written text).
 */

type Side = 'low' | 'high';

/** The value's text and FHIR type, from a ResourceNode, a FHIRPath literal or a plain value. */
function describe(x: unknown): { text: string; type?: string } | undefined {
  if (isNode(x)) {
    const text = nodeWrittenText(x) ?? String(x.data);
    return { text, type: x.fhirNodeDataType ?? undefined };
  }
  if (typeof x === 'number' || typeof x === 'string') return { text: String(x), type: typeof x === 'number' ? 'decimal' : undefined };
  const cls = (x as object | null)?.constructor?.name ?? '';
  const type = { FP_Date: 'date', FP_DateTime: 'dateTime', FP_Time: 'time', FP_Decimal: 'decimal', FP_Decimal_Native: 'decimal' }[cls];
  return type ? { text: String(x), type } : undefined;
}

const DECIMAL_TYPES = new Set(['decimal', 'integer', 'positiveInt', 'unsignedInt', 'System.Decimal', 'System.Integer']);

export function boundaryOf(text: string, type: string | undefined, side: Side, precision?: number): string | number | undefined {
  const t = type ?? guessType(text);
  if (DECIMAL_TYPES.has(t)) return decimalBoundary(text, side, precision);
  if (t === 'date' || t === 'System.Date') return dateTimeBoundary(text, side, precision ?? 8, false);
  if (t === 'dateTime' || t === 'instant' || t === 'System.DateTime') return dateTimeBoundary(text, side, precision ?? 17, true);
  if (t === 'time' || t === 'System.Time') return timeBoundary(text, side, precision ?? 9);
  return undefined;
}

function guessType(text: string): string {
  if (/^-?\d+(\.\d+)?$/.test(text)) return 'decimal';
  if (/^\d{2}:/.test(text)) return 'time';
  return text.includes('T') ? 'dateTime' : 'date';
}

/** `1.0` spans [0.95, 1.05): half a unit of the last written digit either way. */
function decimalBoundary(text: string, side: Side, precision?: number): number | undefined {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(/[eE]/.test(text) ? String(Number(text)) : text);
  if (!m) return undefined;
  const fraction = m[3] ?? '';
  const scale = fraction.length + 1;
  const magnitude = BigInt(`${m[2]}${fraction}0`);
  const value = m[1] ? -magnitude : magnitude;
  let r = side === 'low' ? value - 5n : value + 5n;
  let s = scale;
  if (precision !== undefined && precision < scale) {
    const d = 10n ** BigInt(scale - precision);
    r = side === 'low' ? floorDiv(r, d) : -floorDiv(-r, d);
    s = precision;
  }
  return Number(withScale(r, s));
}

function floorDiv(a: bigint, d: bigint): bigint {
  const q = a / d;
  return a % d !== 0n && a < 0n ? q - 1n : q;
}

function withScale(v: bigint, scale: number): string {
  const neg = v < 0n;
  const digits = (neg ? -v : v).toString().padStart(scale + 1, '0');
  const s = scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits;
  return neg ? `-${s}` : s;
}

const DATE_TIME = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?)?)?T?(Z|[+-]\d{2}:\d{2})?$/;

function daysIn(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/** Fills what a date or dateTime leaves out with its earliest or latest value (and zone, for dateTimes). */
function dateTimeBoundary(text: string, side: Side, precision: number, withTime: boolean): string | undefined {
  const m = DATE_TIME.exec(text);
  if (!m) return undefined;
  const low = side === 'low';
  const year = m[1]!;
  const month = m[2] ?? (low ? '01' : '12');
  const day = m[3] ?? (low ? '01' : String(daysIn(Number(year), Number(month))).padStart(2, '0'));
  let out = year;
  if (precision >= 6) out += `-${month}`;
  if (precision >= 8) out += `-${day}`;
  if (!withTime || precision <= 8) return out;
  out += `T${m[4] ?? (low ? '00' : '23')}`;
  if (precision >= 12) out += `:${m[5] ?? (low ? '00' : '59')}`;
  if (precision >= 14) out += `:${m[6] ?? (low ? '00' : '59')}`;
  if (precision >= 17) out += `.${fraction(m[7], low)}`;
  return out + (m[8] ?? (low ? '+14:00' : '-12:00'));
}

function timeBoundary(text: string, side: Side, precision: number): string | undefined {
  const m = /^(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$/.exec(text);
  if (!m) return undefined;
  const low = side === 'low';
  let out = m[1]!;
  if (precision >= 4) out += `:${m[2] ?? (low ? '00' : '59')}`;
  if (precision >= 6) out += `:${m[3] ?? (low ? '00' : '59')}`;
  if (precision >= 9) out += `.${fraction(m[4], low)}`;
  return out;
}

function fraction(written: string | undefined, low: boolean): string {
  return (written ?? '').padEnd(3, low ? '0' : '9').slice(0, Math.max(3, written?.length ?? 0));
}

function boundaryFunction(side: Side) {
  return (inputs: unknown[], precision?: unknown) => {
    if (inputs.length > 1) throw new Error(`${side}Boundary() expects a single value, got ${inputs.length}`);
    const d = inputs.length ? describe(inputs[0]) : undefined;
    if (!d) return [];
    const p = typeof precision === 'number' ? precision : isNode(precision) ? Number(precision.data) : undefined;
    const r = boundaryOf(d.text, d.type, side, p);
    return r === undefined ? [] : [r];
  };
}

export const boundaryFunctions: UserInvocationTable = {
  lowBoundary: { fn: boundaryFunction('low'), arity: { 0: [], 1: ['Integer'] }, internalStructures: true },
  highBoundary: { fn: boundaryFunction('high'), arity: { 0: [], 1: ['Integer'] }, internalStructures: true },
} as unknown as UserInvocationTable;
