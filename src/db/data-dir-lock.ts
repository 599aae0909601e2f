import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";

/** The lock file inside a PGlite data directory, holding the PID of the process that has it open. */
export const LOCK_FILE = "apikeys.lock";

/** Raised when another live process holds the data directory. */
export class DataDirInUseError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    super(`data directory in use by PID ${pid} (${dir}); stop that process first, or use another APIKEYS_DATA_DIR`);
  }
}

/** An exclusive hold on a data directory, released by `release`. */
export interface DataDirLock {
  release(): void;
}

// A lock file is written in one small write right after it is created; one found empty is being written.
const READ_ATTEMPTS = 5;
const READ_RETRY_MS = 20;

/**
 * Takes the data directory for this process before anything opens it: creates
 * `apikeys.lock` with O_EXCL holding our PID. A lock left by a process that is
 * gone (killed, crashed, or a PID that is now our own, as after a container
 * restart) is stale and taken over; one held by a live process throws
 * `DataDirInUseError` having changed nothing. Liveness is `kill(pid, 0)`, so the
 * lock only keeps out processes of the same host and PID namespace (see
 * docs/operations.md).
 */
export function lockDataDir(dir: string): DataDirLock {
  const path = join(dir, LOCK_FILE);
  // Two rounds: a stale lock is removed once, then created anew; losing that race to another start is "in use".
  for (let round = 0; round < 2; round++) {
    let fd: number;
    try {
      fd = openSync(path, "wx", 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const holder = readHolder(path);
      if (holder !== undefined && holder !== process.pid && isAlive(holder)) throw new DataDirInUseError(dir, holder);
      if (round === 1) throw new DataDirInUseError(dir, holder ?? 0);
      removeIfHeldBy(path, holder);
      continue;
    }
    try {
      writeSync(fd, `${process.pid}\n`);
    } finally {
      closeSync(fd);
    }
    let released = false;
    return {
      release() {
        if (released) return;
        released = true;
        removeIfHeldBy(path, process.pid);
      },
    };
  }
  throw new Error("unreachable");
}

/** The PID in a lock file; undefined when it holds none (being written, or garbage). */
function readHolder(path: string): number | undefined {
  for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    const match = /^(\d{1,10})\n$/.exec(text);
    if (match !== null) return Number(match[1]);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, READ_RETRY_MS);
  }
  return undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user, which still holds the directory.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes the lock file if it still holds `pid` (or no PID at all, when `pid` is undefined). */
function removeIfHeldBy(path: string, pid: number | undefined): void {
  if (readHolder(path) !== pid) return;
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}
