import { Code, ConnectError } from "@connectrpc/connect";

/** One owner a stream counts against: e.g. its API key, or its remote address. */
export interface StreamOwner {
  /** What the owner is, as the refusal names it ("key", "address"). */
  kind: string;
  id: string;
  /** Streams this owner may hold open at once. */
  max: number;
}

/**
 * Counts the long-lived streams each owner holds open, so one caller cannot pin
 * an unbounded number of them (each costs memory and fan-out work on every event).
 */
export class StreamCaps {
  private readonly open = new Map<string, number>();

  /** Counts of open streams, for tests and metrics. */
  count(stream: string, owner: Omit<StreamOwner, "max">): number {
    return this.open.get(slot(stream, owner)) ?? 0;
  }

  /**
   * Reserves one `stream` under every owner, or throws resource_exhausted (reserving
   * nothing) when one of them already holds its maximum. Returns the release.
   */
  acquire(stream: string, owners: readonly StreamOwner[]): () => void {
    for (const owner of owners) {
      if ((this.open.get(slot(stream, owner)) ?? 0) >= owner.max) {
        throw new ConnectError(`too many open ${stream} streams for this ${owner.kind} (at most ${owner.max})`, Code.ResourceExhausted);
      }
    }
    const slots = owners.map((owner) => slot(stream, owner));
    for (const s of slots) this.open.set(s, (this.open.get(s) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const s of slots) {
        const left = (this.open.get(s) ?? 1) - 1;
        if (left === 0) this.open.delete(s);
        else this.open.set(s, left);
      }
    };
  }
}

function slot(stream: string, owner: Omit<StreamOwner, "max">): string {
  return `${stream}\u0000${owner.kind}\u0000${owner.id}`;
}
