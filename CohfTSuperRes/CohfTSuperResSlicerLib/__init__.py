"""Helpers of the CohfTSuperRes Slicer module, one job per file (a package, so Slicer does not take them for modules).

- nodes: volume nodes <-> SimpleITK images (world coordinates, LPS), node checks;
- choices: which models the GUI can offer (models.json) and whether a choice or a weights file can run;
- dependencies: which Python packages a run needs, and their installation after consent;
- childrun: one run of the library's command line in a child Python process (start, poll, cancel);
- runs: that child run, ending with its result in the scene (what the GUI polls and process() waits for);
- samples: the project's sample data in Slicer's Sample Data module and in a scene;
- text: Slicer's translation function for user-facing strings.
"""
