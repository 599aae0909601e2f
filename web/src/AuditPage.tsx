import { useInfiniteQuery } from "@tanstack/react-query";
import { type FormEvent, useId, useState } from "react";
import { AuditCallKind, AuditEventView } from "../../src/gen/apikeys/v1/admin_pb.js";
import { AuditStage } from "../../src/gen/apikeys/v1/audit_pb.js";
import { adminClient } from "./api.js";
import { Empty, ErrorMessage, Loading } from "./components.js";
import { formatTime, isoTime, relativeTime } from "./format.js";

const PAGE_SIZE = 50;

const OUTCOMES: Record<AuditStage, { label: string; badge: string }> = {
  [AuditStage.UNSPECIFIED]: { label: "Unknown", badge: "badge" },
  [AuditStage.ATTEMPT]: { label: "In progress", badge: "badge" },
  [AuditStage.SUCCESS]: { label: "Success", badge: "badge ok" },
  [AuditStage.FAILURE]: { label: "Failure", badge: "badge off" },
};

const KINDS = [
  { value: AuditCallKind.WRITE, label: "Changes" },
  { value: AuditCallKind.READ, label: "Reads" },
  { value: AuditCallKind.UNSPECIFIED, label: "Everything" },
];

interface AuditFilters {
  kind: AuditCallKind;
  target: string;
  actor: string;
  outcome: string;
}

/**
 * The audit log, one row per call with its outcome; every filter runs on the
 * server, so a page is never emptied by filtering in the browser.
 */
export function AuditPage() {
  const [filters, setFilters] = useState<AuditFilters>({ kind: AuditCallKind.WRITE, target: "", actor: "", outcome: "" });
  const [targetInput, setTargetInput] = useState("");
  const [actorInput, setActorInput] = useState("");
  const events = useInfiniteQuery({
    queryKey: ["AdminGetAuditEvents", filters],
    queryFn: ({ pageParam }) =>
      adminClient.adminGetAuditEvents({ pageSize: PAGE_SIZE, pageToken: pageParam, view: AuditEventView.CALLS, ...filters }),
    initialPageParam: "",
    getNextPageParam: (last) => last.nextPageToken || undefined,
  });
  const ids = { target: useId(), actor: useId(), kind: useId(), outcome: useId() };
  const names = new Map(events.data?.pages.flatMap((p) => Object.entries(p.names)) ?? []);
  const rows = events.data?.pages.flatMap((p) => p.events) ?? [];
  const filtered = filters.target !== "" || filters.actor !== "" || filters.outcome !== "";
  const kindLabel = KINDS.find((k) => k.value === filters.kind)!.label.toLowerCase();

  function apply(e: FormEvent) {
    e.preventDefault();
    setFilters({ ...filters, target: targetInput.trim(), actor: actorInput.trim() });
  }

  return (
    <section aria-labelledby="audit-title">
      <div className="page-header">
        <h1 id="audit-title">Audit log</h1>
      </div>
      <p className="muted">Every admin call: who made it, on what, and how it ended. Newest first.</p>
      <form className="toolbar wrap" onSubmit={apply}>
        <span className="toolbar-field">
          <label htmlFor={ids.kind}>Show</label>
          <select id={ids.kind} value={filters.kind} onChange={(e) => setFilters({ ...filters, kind: Number(e.target.value) as AuditCallKind })}>
            {KINDS.map((k) => (
              <option key={k.value} value={k.value}>
                {k.label}
              </option>
            ))}
          </select>
        </span>
        <span className="toolbar-field">
          <label htmlFor={ids.outcome}>Outcome</label>
          <select id={ids.outcome} value={filters.outcome} onChange={(e) => setFilters({ ...filters, outcome: e.target.value })}>
            <option value="">Any</option>
            <option value="ok">Success</option>
            <option value="failed">Failure</option>
            <option value="permission_denied">Permission denied</option>
          </select>
        </span>
        <span className="toolbar-field">
          <label htmlFor={ids.target}>Target</label>
          <input id={ids.target} placeholder="Name or id" value={targetInput} onChange={(e) => setTargetInput(e.target.value)} />
        </span>
        <span className="toolbar-field">
          <label htmlFor={ids.actor}>Actor key</label>
          <input id={ids.actor} placeholder="Name or id" value={actorInput} onChange={(e) => setActorInput(e.target.value)} />
        </span>
        <button type="submit" className="secondary">
          Filter
        </button>
        {filtered && (
          <button
            type="button"
            className="link-button"
            onClick={() => {
              setTargetInput("");
              setActorInput("");
              setFilters({ ...filters, target: "", actor: "", outcome: "" });
            }}
          >
            Clear filters
          </button>
        )}
      </form>
      {events.isPending && <Loading what="audit events" />}
      <ErrorMessage error={events.error} />
      {events.data !== undefined && rows.length === 0 && (
        <Empty>
          <p>{filtered ? `No ${kindLabel} match these filters.` : `No ${kindLabel} recorded yet.`}</p>
        </Empty>
      )}
      {rows.length > 0 && (
        <div className="table-wrap">
          <table className="responsive">
            <caption className="sr-only">Audit events ({rows.length} shown)</caption>
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
                    <time dateTime={isoTime(ev.time)} title={formatTime(ev.time)}>
                      {relativeTime(ev.time)}
                    </time>
                  </td>
                  <th scope="row" data-label="Call">
                    <code title={ev.rpc}>{ev.rpc.slice(ev.rpc.lastIndexOf("/") + 1)}</code>
                  </th>
                  <td data-label="Result">
                    <span className={OUTCOMES[ev.stage].badge}>{OUTCOMES[ev.stage].label}</span>
                    {ev.code !== "" && ev.code !== "ok" && <span className="sub">{ev.code}</span>}
                    {ev.message !== "" && <span className="sub">{ev.message}</span>}
                  </td>
                  <td data-label="Actor">{names.get(ev.actorKeyId) ?? <code className="id">{ev.actorKeyId || "—"}</code>}</td>
                  <td data-label="Targets">
                    {ev.targetIds.length === 0 && <span className="muted">—</span>}
                    {ev.targetIds.map((id) =>
                      names.has(id) ? (
                        <span key={id} className="target" title={id}>
                          {names.get(id)}
                        </span>
                      ) : (
                        <code key={id} className="id">
                          {id}
                        </code>
                      ),
                    )}
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
