import type { ChildProcess } from 'node:child_process';

/**
 * Every fhir-rte process a test started and that has not exited. A test that fails before it stops its
 * process must not leave it running after the test file (it would hold a port and wait forever on a
 * database that is gone): the test worker kills the leftovers as it exits.
 */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export function tracked<C extends ChildProcess>(child: C): C {
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}
