"""Raw multi-view captures -> the subject layout of docs/conventions.md (docs/preprocessing.md).

Modules: ``raw_layout`` (where NeRSemble's files are), ``calibration`` (camera_params.json), ``video`` (frames and
background plates), ``crop`` (square crop + resize and the intrinsics update), ``plan`` (frame numbering and the
resume manifest), ``files`` (atomic writers), ``extract`` (the preprocessing run), ``masks`` (background
subtraction), ``matting`` (the hook for a learned matting model), ``background_removal`` (masks for a subject
folder), ``check`` (what is missing or inconsistent in a subject folder), ``mask_quality`` (mask IoU against a
synthetic capture's ground truth).
"""
