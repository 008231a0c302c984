"""The `rigged` avatar model (GaussianAvatars): Gaussians bound to the triangles of the subject's face-model mesh.
`binding`: triangle frames and posing of triangle-local Gaussians (used by other models too)."""
