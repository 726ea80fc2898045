#!/usr/bin/env python3
"""A tiny stand-in for a Kubernetes API server's discovery endpoints.

`kubectl apply --dry-run=client` still asks the server which kinds exist (to
map each manifest to a REST path) and whether the object already exists. With
no cluster here, this stub answers exactly those questions: discovery for the
core group, apiextensions.k8s.io (CRDs) and caracal.dev, and 404 for every
object lookup, so kubectl parses and maps every manifest as it would against a
real server. It accepts no writes. Usage: kube-discovery-stub.py PORT
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

CARACAL = [("agents", "Agent"), ("policies", "Policy"), ("delegations", "Delegation")]
DOCS = {
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "namespaces", "singularName": "namespace", "namespaced": False, "kind": "Namespace", "verbs": ["get", "create"]},
    ]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "apiextensions.k8s.io", "versions": [{"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}},
        {"name": "caracal.dev", "versions": [{"groupVersion": "caracal.dev/v1alpha1", "version": "v1alpha1"}],
         "preferredVersion": {"groupVersion": "caracal.dev/v1alpha1", "version": "v1alpha1"}},
    ]},
    "/apis/apiextensions.k8s.io/v1": {"kind": "APIResourceList", "groupVersion": "apiextensions.k8s.io/v1", "resources": [
        {"name": "customresourcedefinitions", "singularName": "customresourcedefinition", "namespaced": False,
         "kind": "CustomResourceDefinition", "verbs": ["get", "create", "patch"]},
    ]},
    "/apis/caracal.dev/v1alpha1": {"kind": "APIResourceList", "groupVersion": "caracal.dev/v1alpha1", "resources": [
        {"name": plural, "singularName": kind.lower(), "namespaced": True, "kind": kind, "verbs": ["get", "create", "patch"]}
        for plural, kind in CARACAL
    ]},
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        body = DOCS.get(path)
        status = 200
        if body is None:
            status = 404
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
