import { create, createFileRegistry, type DescService, setExtension } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, MethodOptionsSchema, ServiceOptionsSchema } from "@bufbuild/protobuf/wkt";
import { type MethodAuth, MethodAuthSchema, ServicePermissionsSchema, auth, permissions } from "../../src/gen/apikeys/v1/options_pb.js";

/** Builds a real service descriptor with the given options, as protoc would. */
export function serviceWith(spec: {
  declares?: { service: string; names: string[] };
  methods: Array<{ name: string; auth?: Partial<Omit<MethodAuth, "$typeName">> }>;
}): DescService {
  const serviceOptions = create(ServiceOptionsSchema);
  if (spec.declares) {
    const declared = create(ServicePermissionsSchema, {
      service: spec.declares.service,
      permissions: spec.declares.names.map((name) => ({ name, description: `may ${name}` })),
    });
    setExtension(serviceOptions, permissions, declared);
  }
  const file = create(FileDescriptorProtoSchema, {
    name: "test/v1/test.proto",
    package: "test.v1",
    syntax: "proto3",
    messageType: [{ name: "Empty" }],
    service: [
      {
        name: "TestService",
        options: serviceOptions,
        method: spec.methods.map((m) => {
          const options = create(MethodOptionsSchema);
          if (m.auth) setExtension(options, auth, create(MethodAuthSchema, m.auth));
          return { name: m.name, inputType: ".test.v1.Empty", outputType: ".test.v1.Empty", options };
        }),
      },
    ],
  });
  return createFileRegistry(file, () => undefined).getService("test.v1.TestService")!;
}
