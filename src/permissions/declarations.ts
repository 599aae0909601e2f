// Requirements and declarations are read from the proto options the same way by the
// server and by @apikeys/client, which owns the code.
export { type MethodRequirement, checkAuthOptions, declaredPermissions, methodRequirement } from "@apikeys/client";
