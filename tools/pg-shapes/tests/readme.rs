//! README's "Unconfirmed PG facts" table names every field a shape file marks `x-unconfirmed`, so
//! the one table a reader looks at cannot fall behind the data.

#[test]
fn the_readme_lists_every_unconfirmed_field_of_the_shapes() {
    let readme = std::fs::read_to_string(pg_shapes::default_dir().join("../README.md")).unwrap();
    let start = readme.find("#### Unconfirmed PG facts").expect("README has the unconfirmed table");
    let table: Vec<&str> =
        readme[start..].lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).collect();
    let shapes = pg_shapes::Shapes::load_default().unwrap();
    let marks = shapes.unconfirmed();
    assert!(!marks.is_empty());
    for mark in marks {
        let field = if mark.field == "/" { "`/`".to_string() } else { format!("`{}`", mark.field) };
        let listed = table.iter().any(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            cells.len() > 3
                && cells[1] == format!("`{}`", mark.shape)
                && cells[2].split(", ").any(|f| f.starts_with(&field))
        });
        assert!(listed, "README's unconfirmed table has no row for {} {} ({})", mark.shape, mark.field, mark.fallback);
    }
}
