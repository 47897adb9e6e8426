"""The project's sample data (CohfTSuperResLib.data.sample_data) in Slicer: registered in the Sample Data module,
or loaded straight into a scene (self-test, scripts)."""

from __future__ import annotations

import logging

from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.data.sample_data import read_sample, sample_files


CATEGORY = "Cohf-T super-resolution"
SAMPLE_NAME = "CohfTSuperResBrainSlab"
NODE_NAMES = {"lr_t2": "patient26_T2_LR", "t1": "patient26_T1", "hr_t2": "patient26_T2_HR_truth"}


def sampleDataSource() -> dict:
    """Keyword arguments of SampleData.SampleDataLogic.registerCustomSampleDataSource for the checked sample:
    local file URIs (Sample Data copies them into its cache and checks their sha256), one node per file."""
    files = sample_files()
    roles = list(NODE_NAMES)
    return dict(
        category=CATEGORY,
        sampleName=SAMPLE_NAME,
        thumbnailFileName=str(files.thumbnail),
        uris=[files.paths[role].as_uri() for role in roles],
        fileNames=[files.paths[role].name for role in roles],
        nodeNames=[NODE_NAMES[role] for role in roles],
        checksums=[f"SHA256:{files.sha256[role]}" for role in roles],
        loadFileTypes=["VolumeFile"] * len(roles),
    )


def registerSampleData() -> None:
    """Add the sample to Slicer's Sample Data module (called once Slicer has started). A missing or damaged
    sample, or a Slicer without the Sample Data module, is logged and leaves the module usable."""
    try:
        import SampleData

        source = sampleDataSource()
    except (ImportError, InputError) as error:
        logging.warning(f"CohfTSuperRes: sample data not registered: {error}")  # logs stay untranslated
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(**source)


def loadSampleIntoScene(scene, roles: tuple[str, ...] = ("lr_t2", "t1", "hr_t2")) -> dict:
    """New volume nodes (NODE_NAMES) holding the checked sample files of `roles`; the nodes by role."""
    from .nodes import addVolumeNode

    images = read_sample()
    return {role: addVolumeNode(scene, images[role], NODE_NAMES[role]) for role in roles}
