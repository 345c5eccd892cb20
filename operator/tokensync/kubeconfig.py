"""The kubeconfig as kubectl reads it, for the user-facing commands (``tokensync status``/``refresh``).

A path list (``--kubeconfig`` or $KUBECONFIG), merged by kubectl's rules; the current or chosen
context and its namespace; inside a pod with neither, the pod's service account.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes
import yaml

DEFAULT_KUBECONFIG = "~/.kube/config"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubeconfigError(Exception):
    """The kubeconfig cannot be used; ``str()`` says why."""


def kubeconfig_paths(kubeconfig: str | None) -> list[Path]:
    """The files of a kubeconfig path list (``a:b`` as $KUBECONFIG allows), those that exist."""
    text = kubeconfig or DEFAULT_KUBECONFIG
    return [p for p in (Path(part).expanduser() for part in text.split(os.pathsep) if part) if p.is_file()]


def pick_context(documents: Sequence[Mapping[str, Any]], context: str | None) -> tuple[str, str]:
    """The context to use and its namespace ("default" if it names none), by kubectl's merge rules.

    Of several files the first to set ``current-context`` wins, and so does the first context of a name.
    """
    name = context
    if name is None:
        name = next((str(d["current-context"]) for d in documents if d.get("current-context")), None)
    if not name:
        raise KubeconfigError("the kubeconfig sets no current-context; choose one with --context")
    for document in documents:
        for entry in document.get("contexts") or []:
            if isinstance(entry, Mapping) and entry.get("name") == name:
                namespace = (entry.get("context") or {}).get("namespace")
                return name, str(namespace or "default")
    raise KubeconfigError(f'context "{name}" does not exist in the kubeconfig')


def load_kubeconfig(kubeconfig: str | None, context: str | None) -> tuple[kubernetes.client.Configuration, str]:
    """The API configuration and the default namespace, as kubectl finds them.

    ``kubeconfig`` is ``--kubeconfig`` or $KUBECONFIG (a path list), else ~/.kube/config. With
    neither, inside a pod, the pod's service account is used (as kubectl does).
    """
    configuration = kubernetes.client.Configuration()
    paths = kubeconfig_paths(kubeconfig)
    if not paths:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except kubernetes.config.ConfigException as exc:
                raise KubeconfigError(f"in-cluster configuration: {exc}") from None
            try:
                namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
            except OSError:
                namespace = "default"
            return configuration, namespace
        raise KubeconfigError(f"no kubeconfig found at {kubeconfig or DEFAULT_KUBECONFIG}")
    documents = []
    for path in paths:
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise KubeconfigError(f"cannot read {path}: {exc}") from None
        if isinstance(document, Mapping):
            documents.append(document)
    name, namespace = pick_context(documents, context)
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.pathsep.join(str(p) for p in paths),
            context=name,
            client_configuration=configuration,
            persist_config=False,
        )
    except kubernetes.config.ConfigException as exc:
        raise KubeconfigError(f"context {name!r}: {exc}") from None
    return configuration, namespace
