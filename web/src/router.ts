import { type MouseEvent, useEffect, useState } from "react";

export const PAGES = [
  { path: "/keys", title: "API keys" },
  { path: "/policies", title: "Policies" },
  { path: "/consumers", title: "Consumers" },
  { path: "/permissions", title: "Permissions" },
  { path: "/audit", title: "Audit log" },
] as const;

export type PagePath = (typeof PAGES)[number]["path"];

function currentPage(): PagePath {
  const path = window.location.pathname.replace(/\/+$/, "");
  return PAGES.find((p) => p.path === path)?.path ?? "/keys";
}

/** The page in the address bar, following back/forward. */
export function usePage(): PagePath {
  const [page, setPage] = useState(currentPage);
  useEffect(() => {
    const onPop = () => setPage(currentPage());
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  return page;
}

/** Click handler for an in-app link: plain clicks navigate without a reload, modified clicks behave as usual. */
export function navigate(event: MouseEvent<HTMLAnchorElement>, path: PagePath): void {
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  if (window.location.pathname !== path) window.history.pushState(null, "", path);
  window.dispatchEvent(new PopStateEvent("popstate"));
}
