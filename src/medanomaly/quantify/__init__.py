"""quantify."""
