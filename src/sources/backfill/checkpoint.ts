import type pg from 'pg';

/**
 * Named positions in `fhir_rte.checkpoint` (the table gap repair keeps its watermark in): a backfill's
 * export job in flight (`backfill-export:<kick-off URL>`) and the start of the last successful backfill of
 * a source (`backfill:<source>`), which `--since auto` reads.
 */
export class Checkpoints {
  constructor(private readonly pool: pg.Pool) {}

  async read<T>(name: string): Promise<T | undefined> {
    const { rows } = await this.pool.query<{ value: T }>('SELECT value FROM fhir_rte.checkpoint WHERE name = $1', [name]);
    return rows[0]?.value;
  }

  async write(name: string, value: unknown): Promise<void> {
    await this.pool.query(
      `INSERT INTO fhir_rte.checkpoint (name, value, updated_at) VALUES ($1, $2, now())
       ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()`,
      [name, JSON.stringify(value)],
    );
  }

  /**
   * Sets one member of an object held under `key` (`files` → url → lines done) in one statement, so files
   * downloaded side by side never overwrite each other's progress.
   */
  async setMember(name: string, key: string, member: string, value: unknown): Promise<void> {
    await this.pool.query(
      `UPDATE fhir_rte.checkpoint SET value = jsonb_set(value, ARRAY[$2::text], coalesce(value->$2, '{}'::jsonb) || jsonb_build_object($3::text, $4::jsonb)), updated_at = now() WHERE name = $1`,
      [name, key, member, JSON.stringify(value)],
    );
  }

  /** Records a finished run: the source's `since` is written and its job checkpoint removed, together. */
  async finish(jobName: string | undefined, sourceName: string, value: unknown): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      if (jobName) await client.query('DELETE FROM fhir_rte.checkpoint WHERE name = $1', [jobName]);
      await client.query(
        `INSERT INTO fhir_rte.checkpoint (name, value, updated_at) VALUES ($1, $2, now())
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = now()`,
        [sourceName, JSON.stringify(value)],
      );
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  async remove(name: string): Promise<void> {
    await this.pool.query('DELETE FROM fhir_rte.checkpoint WHERE name = $1', [name]);
  }
}
