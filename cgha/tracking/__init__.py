"""Face tracking with a license-free parametric face model: ``face_model`` (identity PCA over the synthetic head,
its expression space and iBUG-68 landmarks) and ``fitting`` (batched landmark fit of pose, expression, identity
and scale over frames and cameras). The landmarker (``landmarker``, MediaPipe) is an optional extra and is not
imported here."""
from .face_model import FACE_MODEL_NAME, FaceModel, face_model_arrays, face_model_path
from .fitting import FitConfig, FitResult, fit_landmarks, project_landmarks, rotation_error_deg

__all__ = ["FACE_MODEL_NAME", "FaceModel", "face_model_arrays", "face_model_path", "FitConfig", "FitResult",
           "fit_landmarks", "project_landmarks", "rotation_error_deg"]
