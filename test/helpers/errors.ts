import { Code, ConnectError } from "@connectrpc/connect";

/** Awaits a call and returns the ConnectError it failed with; fails the test if it succeeded. */
export async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail, but it succeeded");
}

/** The code a call ended with: "ok" or the ConnectError code. */
export async function codeOf(promise: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await promise;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}
