// The fields of a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1, from the LWS
// API reference) that validate_manifests.mjs checks rendered objects against:
// an unknown field or a wrong type fails. The pod templates are the core/v1
// PodTemplateSpec, checked in full.
import type { IObjectMeta } from "@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta";
import type { IPodTemplateSpec } from "kubernetes-models/v1/PodTemplateSpec";

type IntOrString = number | string;

export interface ILeaderWorkerSet {
  apiVersion: "leaderworkerset.x-k8s.io/v1";
  kind: "LeaderWorkerSet";
  metadata: IObjectMeta & { name: string };
  spec: {
    replicas?: number;
    startupPolicy?: "LeaderCreated" | "LeaderReady";
    leaderWorkerTemplate: {
      size?: number;
      restartPolicy?: "RecreateGroupOnPodRestart" | "None";
      leaderTemplate?: IPodTemplateSpec;
      workerTemplate: IPodTemplateSpec;
      subGroupPolicy?: { subGroupSize?: number };
    };
    rolloutStrategy?: {
      type?: "RollingUpdate";
      rollingUpdateConfiguration?: { maxUnavailable?: IntOrString; maxSurge?: IntOrString };
    };
    networkConfig?: { subdomainPolicy?: "Shared" | "UniquePerReplica" };
  };
}
