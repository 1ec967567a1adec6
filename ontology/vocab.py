# ruff: noqa: N815  (RDF terms are camelCase by convention; these are the vocabulary's own names)
"""The fedsim vocabulary as a Python namespace: a typo in a term is an error, not a new IRI.

Generated from ``ontology/fedsim.ttl`` and checked against it by ``tests/test_vocab.py`` (every
term here is declared there, and the other way round).
"""

from __future__ import annotations

from rdflib import Namespace, URIRef
from rdflib.namespace import RDF, RDFS, XSD, DefinedNamespace

__all__ = ["DEV", "DEVICE", "FEDSIM", "LINK", "MODEL", "PREFIXES", "RUN"]


class FEDSIM(DefinedNamespace):
    """Terms of ``https://w3id.org/fedsim/vocab#``."""

    _NS = Namespace("https://w3id.org/fedsim/vocab#")
    _fail = True

    Accelerometer: URIRef
    CO2Sensor: URIRef
    Camera: URIRef
    Device: URIRef
    DeviceLink: URIRef
    DeviceProfile: URIRef
    Flash: URIRef
    Gateway: URIRef
    Gyroscope: URIRef
    HumiditySensor: URIRef
    LightSensor: URIRef
    LinkType: URIRef
    Magnetometer: URIRef
    Microphone: URIRef
    ModelDescription: URIRef
    Participation: URIRef
    PressureSensor: URIRef
    RAM: URIRef
    Run: URIRef
    TemperatureSensor: URIRef
    activePowerMilliwatts: URIRef
    architecture: URIRef
    attachedTo: URIRef
    boardName: URIRef
    busySeconds: URIRef
    bytesDown: URIRef
    bytesUp: URIRef
    clockMHz: URIRef
    core: URIRef
    coreCount: URIRef
    cyclesPerMAC: URIRef
    cyclesSource: URIRef
    datasetName: URIRef
    deviceName: URIRef
    energyMillijoules: URIRef
    figureSource: URIRef
    firmwareVersion: URIRef
    flashBytes: URIRef
    fleetName: URIRef
    forwardMACs: URIRef
    freeFlashBytes: URIRef
    freeSramBytes: URIRef
    hasFPU: URIRef
    hasLink: URIRef
    hasProfile: URIRef
    headTrainRamBytes: URIRef
    idlePowerMilliwatts: URIRef
    inRun: URIRef
    inferenceFlashBytes: URIRef
    inferenceRamBytes: URIRef
    inputShape: URIRef
    latencySeconds: URIRef
    learnerKind: URIRef
    learnerSlots: URIRef
    linkKind: URIRef
    localRounds: URIRef
    modelName: URIRef
    mtuBytes: URIRef
    numClasses: URIRef
    numExamples: URIRef
    parameterCount: URIRef
    participant: URIRef
    powerSource: URIRef
    profileName: URIRef
    protocolVersion: URIRef
    quantization: URIRef
    reportsTo: URIRef
    requiresSensor: URIRef
    round: URIRef
    runId: URIRef
    rxPowerMilliwatts: URIRef
    scenarioName: URIRef
    scenarioSha256: URIRef
    serialPort: URIRef
    socName: URIRef
    sramBytes: URIRef
    status: URIRef
    throughputBps: URIRef
    trainBatchSize: URIRef
    trainLoss: URIRef
    trainMACs: URIRef
    trainRamBytes: URIRef
    txPowerMilliwatts: URIRef
    uplinkKind: URIRef
    usedGateway: URIRef
    usedModel: URIRef
    weightCapacity: URIRef


DEV = Namespace("https://w3id.org/fedsim/catalog/device/")  # device profiles
LINK = Namespace("https://w3id.org/fedsim/catalog/link/")  # link types
MODEL = Namespace("https://w3id.org/fedsim/catalog/model/")  # model descriptions
DEVICE = Namespace("https://w3id.org/fedsim/device/")  # fleet devices
RUN = Namespace("https://w3id.org/fedsim/run/")  # runs

# The registry's prefixes (ontology/README.md): to name nodes in messages, TDs, serialisations and
# ``prefix:name`` bindings.
PREFIXES: dict[str, str] = {
    "fedsim": "https://w3id.org/fedsim/vocab#",
    "dev": str(DEV),
    "link": str(LINK),
    "model": str(MODEL),
    "device": str(DEVICE),
    "run": str(RUN),
    "sosa": "http://www.w3.org/ns/sosa/",
    "ssn-system": "http://www.w3.org/ns/ssn/systems/",
    "s3n": "http://w3id.org/s3n/",
    "schema": "http://schema.org/",
    "unit": "http://qudt.org/vocab/unit/",
    "nnet": "https://w3id.org/tinyml-schema/neural-network-schema#",
    "rdf": str(RDF),
    "rdfs": str(RDFS),
    "xsd": str(XSD),
}
