import { readdirSync, readFileSync } from 'node:fs';

/**
 * What the benchmarks read of a process from /proc/<pid>/stat: the fields after its command name (which may
 * itself hold spaces and parentheses). Undefined once the process is gone.
 */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** A process's CPU in ticks (USER_HZ, 100 a second): utime + stime, fields 14 and 15 of stat. Undefined once it is gone. */
export function ticksOf(pid: number): number | undefined {
  const f = statFields(pid);
  return f && Number(f[11]) + Number(f[12]);
}

/** The parent of a process (field 4 of stat). */
export function parentOf(pid: number): number | undefined {
  const f = statFields(pid);
  return f && Number(f[1]);
}

/**
 * The CPU ticks of a process and its children: its own, those of the children it has reaped (cutime,
 * cstime: for Postgres, backends that ended) and those of its living children.
 */
export function treeTicks(pid: number): number {
  const own = statFields(pid);
  if (!own) return NaN;
  let total = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const child of readdirSync('/proc')) {
    if (!/^\d+$/.test(child)) continue;
    const f = statFields(Number(child));
    if (f && Number(f[1]) === pid) total += Number(f[11]) + Number(f[12]);
  }
  return total;
}
