// Prints a fresh, well-formed token, e.g. for APIKEYS_BOOTSTRAP_TOKEN.
import { generateToken } from "../src/tokens/token.js";

process.stdout.write(`${generateToken(process.env.APIKEYS_TOKEN_PREFIX || "ak")}\n`);
