import { useInfiniteQuery } from "@tanstack/react-query";
import { type FormEvent, useId, useMemo, useState } from "react";
import { AuditStage } from "../../src/gen/apikeys/v1/audit_pb.js";
import { adminClient } from "./api.js";
import { Empty, ErrorMessage, Loading } from "./components.js";
import { formatTime, isoTime } from "./format.js";
import { useAllKeys } from "./queries.js";

const PAGE_SIZE = 50;

const STAGES: Record<AuditStage, { label: string; badge: string }> = {
  [AuditStage.UNSPECIFIED]: { label: "Unknown", badge: "badge" },
  [AuditStage.ATTEMPT]: { label: "Attempt", badge: "badge" },
  [AuditStage.SUCCESS]: { label: "Success", badge: "badge ok" },
  [AuditStage.FAILURE]: { label: "Failure", badge: "badge off" },
};

export function AuditPage() {
  const [targetInput, setTargetInput] = useState("");
  const [targetId, setTargetId] = useState("");
  const keys = useAllKeys();
  const events = useInfiniteQuery({
    queryKey: ["audit-events", targetId],
    queryFn: ({ pageParam }) => adminClient.adminGetAuditEvents({ pageSize: PAGE_SIZE, pageToken: pageParam, targetId }),
    initialPageParam: "",
    getNextPageParam: (last) => last.nextPageToken || undefined,
  });
  const targetFieldId = useId();
  // Actors are keys; show their names where the key still exists.
  const keyNames = useMemo(() => new Map((keys.data ?? []).map((k) => [k.id, k.name])), [keys.data]);
  const [includeReads, setIncludeReads] = useState(false);
  const readsId = useId();
  const all = events.data?.pages.flatMap((p) => p.events) ?? [];
  // The dashboard itself makes a read call on every page view; they bury the writes unless asked for.
  const rows = includeReads ? all : all.filter((ev) => !/\/AdminGet[A-Za-z]*$/.test(ev.rpc));

  function filter(e: FormEvent) {
    e.preventDefault();
    setTargetId(targetInput.trim());
  }

  return (
    <section aria-labelledby="audit-title">
      <div className="page-header">
        <h1 id="audit-title">Audit log</h1>
      </div>
      <p className="muted">Every admin call: who made it, on what, and how it ended. Newest first.</p>
      <form className="toolbar" onSubmit={filter}>
        <label htmlFor={targetFieldId}>Target id</label>
        <input
          id={targetFieldId}
          className="mono"
          placeholder="A key, policy or consumer id"
          value={targetInput}
          onChange={(e) => setTargetInput(e.target.value)}
        />
        <button type="submit" className="secondary">
          Filter
        </button>
        <span className="checkbox-inline">
          <input id={readsId} type="checkbox" checked={includeReads} onChange={(e) => setIncludeReads(e.target.checked)} />
          <label htmlFor={readsId}>Include reads</label>
        </span>
        {targetId !== "" && (
          <button
            type="button"
            className="link-button"
            onClick={() => {
              setTargetInput("");
              setTargetId("");
            }}
          >
            Show all
          </button>
        )}
      </form>
      {events.isPending && <Loading what="audit events" />}
      <ErrorMessage error={events.error} />
      {events.data !== undefined && rows.length === 0 && (
        <Empty>
          <p>{targetId === "" ? "No admin changes recorded yet." : "No event concerns that id."}</p>
          {!includeReads && all.length > 0 && <p>Reads are hidden; tick “Include reads” to see them.</p>}
        </Empty>
      )}
      {rows.length > 0 && (
        <div className="table-wrap">
          <table className="responsive">
            <caption className="sr-only">Audit events ({rows.length})</caption>
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Call</th>
                <th scope="col">Result</th>
                <th scope="col">Actor</th>
                <th scope="col">Targets</th>
                <th scope="col">Request</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((ev) => (
                <tr key={ev.id}>
                  <td data-label="Time">
                    <time dateTime={isoTime(ev.time)}>{formatTime(ev.time)}</time>
                  </td>
                  <th scope="row" data-label="Call">
                    <code title={ev.rpc}>{ev.rpc.slice(ev.rpc.lastIndexOf("/") + 1)}</code>
                  </th>
                  <td data-label="Result">
                    <span className={STAGES[ev.stage].badge}>{STAGES[ev.stage].label}</span>
                    {ev.code !== "" && <span className="sub">{ev.code}</span>}
                    {ev.message !== "" && <span className="sub">{ev.message}</span>}
                  </td>
                  <td data-label="Actor">
                    {keyNames.get(ev.actorKeyId) ?? <code className="id">{ev.actorKeyId || "—"}</code>}
                  </td>
                  <td data-label="Targets">
                    {ev.targetIds.map((id) => (
                      <code key={id} className="id">
                        {keyNames.get(id) ?? id}
                      </code>
                    ))}
                  </td>
                  <td data-label="Request">
                    {ev.request !== undefined && Object.keys(ev.request).length > 0 ? (
                      <details>
                        <summary>Show</summary>
                        <pre className="mono">{JSON.stringify(ev.request, null, 2)}</pre>
                      </details>
                    ) : (
                      <span className="muted">—</span>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {events.hasNextPage && (
        <p>
          <button type="button" className="secondary" disabled={events.isFetchingNextPage} onClick={() => void events.fetchNextPage()}>
            {events.isFetchingNextPage ? "Loading…" : "Load older events"}
          </button>
        </p>
      )}
    </section>
  );
}
