import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type ApiKeyPolicy, ApiKeyPolicySchema } from "../gen/apikeys/v1/resources_pb.js";

/** Maps a policy (row or cached record) to its message. */
export function toPolicyMessage(p: {
  id: string;
  name: string;
  description: string;
  permissions: string[];
  created_on?: Date;
  updated_on?: Date;
  created_by?: string | null;
  createdOn?: Date;
  updatedOn?: Date;
  createdBy?: string | null;
}): ApiKeyPolicy {
  const createdOn = p.created_on ?? p.createdOn;
  const updatedOn = p.updated_on ?? p.updatedOn;
  return create(ApiKeyPolicySchema, {
    id: p.id,
    name: p.name,
    description: p.description,
    permissions: p.permissions,
    createdOn: createdOn && timestampFromDate(createdOn),
    updatedOn: updatedOn && timestampFromDate(updatedOn),
    createdBy: (p.created_by ?? p.createdBy) ?? "",
  });
}
