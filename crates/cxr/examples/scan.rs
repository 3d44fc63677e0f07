fn main() {
    for p in std::env::args().skip(1) {
        let f = std::fs::File::open(&p).unwrap();
        let size = f.metadata().unwrap().len();
        println!("{p}: {:?}", pipe_cxr::dicom_scan::scan(&f, size));
    }
}
