import type { Logger } from 'pino';
import { describeOrigin, type ChangeEvent } from '../events/change-event.js';
import { microsToIso } from './guard.js';
import type { BatchPlan, Poison, ResourceState } from './plan.js';

/** Which events the troubleshooting log follows: resource types (`Patient`) and resources (`Patient/123`). */
export interface TroubleshootSelection {
  types: string[];
  ids: string[];
}

/**
 * The troubleshooting log: every step of a chosen event, at debug level, whatever `log.level` says (an
 * operator who chose events wants to see them): received with its origin; after the commit, applied with
 * its rows per table, stale, or skipped, each with the version it was compared against; dead-lettered with
 * its cause. Resource contents are never logged, only their keys, versions and row counts. The selection
 * can change while running (`PUT /api/troubleshoot`); with nothing chosen it costs one check per batch.
 */
export class Troubleshoot {
  private types = new Set<string>();
  private ids = new Set<string>();
  private readonly log: Logger;

  constructor(logger: Logger, selection: TroubleshootSelection = { types: [], ids: [] }) {
    this.log = logger.child({ component: 'troubleshoot' }, { level: logger.level === 'silent' || logger.level === 'trace' ? logger.level : 'debug' });
    if (selection.types.length || selection.ids.length) this.select(selection);
  }

  get selection(): TroubleshootSelection {
    return { types: [...this.types], ids: [...this.ids] };
  }

  select(selection: TroubleshootSelection): void {
    this.types = new Set(selection.types);
    this.ids = new Set(selection.ids);
    this.log.info({ types: selection.types, ids: selection.ids }, 'troubleshooting log: selection set');
  }

  private get active(): boolean {
    return this.types.size > 0 || this.ids.size > 0;
  }

  private chosen(e: { resourceType?: string; id?: string }): boolean {
    if (e.resourceType === undefined) return false;
    return this.types.has(e.resourceType) || (e.id !== undefined && this.ids.has(`${e.resourceType}/${e.id}`));
  }

  /** A batch handed to the sink. */
  received(batch: ChangeEvent[]): void {
    if (!this.active) return;
    for (const e of batch) if (this.chosen(e)) this.log.debug({ ...describe(e), origin: describeOrigin(e.origin) }, 'troubleshoot: received');
  }

  /** A batch's transaction committed: what became of each chosen event, against the state it was compared with. */
  committed(plan: BatchPlan, before: Map<string, ResourceState>): void {
    if (!this.active) return;
    for (const r of plan.resources) {
      if (!this.chosen(r)) continue;
      const stored = storedOf(before.get(r.key));
      for (const v of r.versions) {
        const rows = Object.fromEntries([...(v.rows ?? new Map())].map(([table, list]) => [table, list.length]));
        const what = r.covered ? 'troubleshoot: applied' : 'troubleshoot: skipped (no transformer covers the type; state kept for rebuild)';
        this.log.debug({ ...describe(v.event), stored, ...(v.event.op === 'upsert' && r.covered ? { rows } : {}) }, what);
      }
    }
    for (const e of plan.stale) {
      if (this.chosen(e)) this.log.debug({ ...describe(e), stored: storedOf(before.get(`${e.resourceType}/${e.id}`)) }, 'troubleshoot: stale (not newer than the stored version, or changing nothing)');
    }
    this.deadLettered(plan.poison);
  }

  deadLettered(poison: Poison[]): void {
    if (!this.active) return;
    for (const p of poison) {
      if (this.chosen(p.event)) this.log.debug({ ...describe(p.event), errorClass: p.errorClass, cause: p.message, detail: p.detail }, 'troubleshoot: dead-lettered');
    }
  }
}

function describe(e: ChangeEvent): Record<string, unknown> {
  return {
    resource: `${e.resourceType ?? '(unknown)'}/${e.id ?? '(unknown)'}`,
    op: e.op,
    ...(e.order.versionId === undefined ? {} : { version: e.order.versionId }),
    ...(e.order.lastUpdatedMicros === undefined ? {} : { lastUpdated: microsToIso(e.order.lastUpdatedMicros) }),
  };
}

function storedOf(s: ResourceState | undefined): Record<string, unknown> {
  if (!s) return { none: true };
  return { version: s.versionId, lastUpdated: s.lastUpdatedMicros === null ? null : microsToIso(s.lastUpdatedMicros), deleted: s.deleted };
}
