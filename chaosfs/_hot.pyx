# placeholder, replaced by the hot path
