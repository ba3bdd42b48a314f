/**
 * Waits for the condition a user would check, never for a fixed time: resolves when `check` returns true,
 * polling; rejects with `what` after the timeout. Bounds are generous because machines are busy.
 */
export async function eventually(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 60_000, everyMs = 250): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      // Not yet answerable (a broker still electing the group's coordinator, a server restarting): ask again.
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}
