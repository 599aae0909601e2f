import { TransportProvider } from "@connectrpc/connect-query";
import { Code, ConnectError } from "@connectrpc/connect";
import { MutationCache, QueryCache, QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { transport } from "./api.js";
import { App, signalSessionEnded } from "./App.js";
import { reportCall } from "./session.js";
import "./styles.css";

function onCallError(err: unknown): void {
  reportCall(err);
  if (err instanceof ConnectError && err.code === Code.Unauthenticated) signalSessionEnded();
}

const queryClient = new QueryClient({
  queryCache: new QueryCache({ onError: onCallError, onSuccess: () => reportCall(undefined) }),
  mutationCache: new MutationCache({ onError: onCallError, onSuccess: () => reportCall(undefined) }),
  defaultOptions: {
    queries: {
      // Admin data changes under other admins' hands; a retry would only delay showing the server's error.
      retry: false,
      // Writes invalidate what they touch; refetching every list on each focus would only add load.
      refetchOnWindowFocus: false,
      staleTime: 5_000,
    },
  },
});

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <TransportProvider transport={transport}>
      <QueryClientProvider client={queryClient}>
        <App />
      </QueryClientProvider>
    </TransportProvider>
  </StrictMode>,
);
