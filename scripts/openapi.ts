// Regenerates docs/openapi.json from the proto sources (npm run openapi).
import { writeFileSync } from "node:fs";
import { OPENAPI_PATH } from "../src/transcoding/openapi.js";
import { formatOpenApi, openApiFromProtoSources } from "./openapi-document.js";

writeFileSync(OPENAPI_PATH, formatOpenApi(openApiFromProtoSources()));
process.stdout.write(`wrote ${OPENAPI_PATH.pathname}\n`);
