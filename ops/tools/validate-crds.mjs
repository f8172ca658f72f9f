// Validates KEDA objects (ScaledObject, TriggerAuthentication) read as a JSON array on stdin
// against KEDA's CRD schemas, as compiled by @kubernetes-models/keda; prints one line per
// object, exits 1 if any is invalid. Kubernetes' own kinds are checked in Python
// (kubernetes-validate); this covers the CRDs it does not know.
import { readFileSync } from "node:fs";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
};
let failed = false;
for (const doc of JSON.parse(readFileSync(0, "utf8"))) {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const name = `${doc.kind}/${doc.metadata?.name}`;
  const Model = models[key];
  if (!Model) {
    console.log(`${name}: no schema for ${key}`);
    failed = true;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`${name}: valid`);
  } catch (error) {
    console.log(`${name}: INVALID ${error.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
